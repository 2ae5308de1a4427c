"""``make bench``: figures and ratios on this machine, with durability on (persistent messages,
publisher confirms, synchronous commits). Nothing here passes or fails on timing."""

"""The local pipeline of ``make run``: every service as a process, on embedded defaults."""

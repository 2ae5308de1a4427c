"""The poller's domain metrics (Prometheus)."""

from prometheus_client import Counter, Gauge, Histogram

POLL_DURATION = Histogram(
    "lengow_orders_poll_duration_seconds",
    "Duration of one poll of one source.",
    ["source", "kind"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
)
POLL_LAST_SUCCESS = Gauge(
    "lengow_orders_poll_last_success_timestamp_seconds",
    "When the last successful poll of a source ended (Unix time).",
    ["source", "kind"],
)
POLL_FAILURES = Counter("lengow_orders_poll_failures_total", "Polls that failed.", ["source"])
ORDERS_PUBLISHED = Counter(
    "lengow_orders_orders_published_total", "order.changed events published.", ["source"]
)
ORDERS_SKIPPED = Counter(
    "lengow_orders_orders_skipped_total",
    "Orders read but not published: malformed or with an unknown status (both kept in"
    " quarantine), or fulfillment when not imported.",
    ["source", "reason"],
)
ACTIONS = Counter("lengow_orders_actions_total", "Marketplace actions, by final state.", ["state"])
CLOCK_SKEW = Gauge(
    "lengow_orders_clock_skew_seconds",
    "This host's clock minus Lengow's (its Date header), at the last poll of a source.",
    ["source"],
)
QUARANTINED = Gauge(
    "lengow_orders_quarantined_orders",
    "Orders Lengow returned that could not be read, kept and read again at every poll.",
    ["source"],
)

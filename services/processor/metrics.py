"""The processor's domain metrics (Prometheus)."""

from prometheus_client import Counter, Gauge

ORDERS_BY_STATUS = Gauge("lengow_orders_orders", "Orders by Lengow status.", ["status"])
TRANSITIONS = Counter(
    "lengow_orders_transitions_total",
    "Observed status moves: initial, normal, skipped, or rejected (flagged, not applied).",
    ["kind"],
)
COMMANDS = Counter("lengow_orders_commands_total", "Commands answered, by outcome.", ["outcome"])

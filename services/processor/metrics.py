"""The processor's domain metrics (Prometheus)."""

from prometheus_client import Counter, Gauge

ORDERS_BY_STATUS = Gauge("lengow_orders_orders", "Orders by Lengow status.", ["status"])
TRANSITIONS = Counter(
    "lengow_orders_transitions_total",
    "Observed status moves: initial, normal, skipped, or rejected (flagged, not applied).",
    ["kind"],
)
COMMANDS_ANSWERED = Counter(
    "lengow_orders_commands_total", "Commands answered, by outcome.", ["outcome"]
)
ORDERS_BY_DEADLINE = Gauge(
    "lengow_orders_orders_by_deadline",
    "Orders still waiting on the seller within the lead time of a deadline (at_risk) or past"
    " it (late), per deadline (acceptance, shipment).",
    ["deadline", "state"],
)
DEADLINE_ALERTS = Counter(
    "lengow_orders_deadline_alerts_total",
    "Deadline alerts said (order.deadline_approaching, order.deadline_missed).",
    ["deadline", "phase"],
)

"""The notifier's domain metrics (Prometheus)."""

from prometheus_client import Counter

INVOICES = Counter(
    "lengow_orders_invoices_total", "Invoice emails, by outcome (sent, failed).", ["outcome"]
)

"""The notifier's domain metrics (Prometheus)."""

from prometheus_client import Counter

INVOICES = Counter(
    "lengow_orders_invoices_total",
    "Invoices by outcome: emails sent, failed or in doubt; invoices held.",
    ["outcome"],
)
CREDIT_NOTES = Counter(
    "lengow_orders_credit_notes_total",
    "Credit notes by outcome: emails sent, failed or in doubt; refunds held.",
    ["outcome"],
)

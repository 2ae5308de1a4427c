"""The credit note (*facture d'avoir*) of a refund: what it credits. Pure, no I/O.

Once an invoice exists it is corrected only by a credit note that refers to it. Lengow gives,
per line, the amount refunded so far (``refunded_amount``, cumulative); the order's status says
whether the refund is whole. So a refund credits what the earlier credit notes of the order
did not: for a whole refund, everything left of the invoice (shipping and discount included);
for a partial one, each line's refunded amount not yet credited. Each credited part keeps the
VAT rate it had on the invoice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

from services.notifier.invoice import (
    ZERO,
    InvoiceLine,
    LineKind,
    line_key,
    money,
    priced_line,
)
from services.notifier.taxes import InvoiceHeldError
from shared.contracts import LengowStatus, OrderRefunded


def refund_key(refund: OrderRefunded) -> str:
    """One refund of the order: the status it reached and when Lengow recorded it."""
    return f"{refund.refund_status.value}@{refund.refunded_at.isoformat()}"


def credited_so_far(credit_notes: Iterable[Sequence[InvoiceLine]]) -> dict[str, Decimal]:
    """What the order's credit notes credited, per invoice line (positive amounts)."""
    credited: dict[str, Decimal] = {}
    for lines in credit_notes:
        for line in lines:
            credited[line.key] = credited.get(line.key, ZERO) - line.total_incl
    return credited


def _credit(line: InvoiceLine, amount: Decimal, whole_line: bool) -> InvoiceLine:
    quantity = line.quantity if whole_line else 1
    return priced_line(line.title, quantity, -amount, line.vat_rate, line.kind, line.key)


def credit_lines(
    invoice_lines: Sequence[InvoiceLine],
    refund: OrderRefunded,
    credited: Mapping[str, Decimal],
) -> tuple[InvoiceLine, ...]:
    """The credit note's lines (negative amounts), empty when nothing is left to credit;
    raises :class:`InvoiceHeldError` when Lengow's figures cannot be credited as they are."""
    if refund.refund_status == LengowStatus.REFUNDED:
        return tuple(
            _credit(line, left, whole_line=left == line.total_incl)
            for line in invoice_lines
            if (left := line.total_incl - credited.get(line.key, ZERO))
        )
    refunded = {
        line_key(line, index): money(line.refunded_amount)
        for index, line in enumerate(refund.lines)
        if line.refunded_amount
    }
    if not refunded:
        raise InvoiceHeldError(
            "a partial refund without Lengow's refunded_amount on any line: what to credit is"
            " unknown"
        )
    goods = {line.key: line for line in invoice_lines if line.kind is LineKind.GOODS}
    unknown = sorted(set(refunded) - set(goods))
    if unknown:
        raise InvoiceHeldError(f"refunded lines {', '.join(unknown)} are not on the invoice")
    lines = []
    for key, amount in refunded.items():
        line = goods[key]
        if abs(amount) > line.total_incl:
            raise InvoiceHeldError(
                f"Lengow gives {amount} refunded on {line.title!r}, invoiced {line.total_incl}"
            )
        left = abs(amount) - credited.get(key, ZERO)
        if left > 0:
            lines.append(_credit(line, left, whole_line=left == line.total_incl))
    return tuple(lines)

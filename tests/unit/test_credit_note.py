"""What a refund's credit note credits, with Lengow's cumulative ``refunded_amount``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.credit_note import credit_lines, credited_so_far, refund_key
from services.notifier.invoice import InvoiceLine, LineKind
from services.notifier.taxes import InvoiceHeldError
from shared.contracts import LengowStatus, OrderRefunded
from tests.unit.test_taxes import invoice_of, shipment

D = Decimal
AT = datetime(2026, 12, 1, 10, tzinfo=UTC)


def invoiced() -> tuple[InvoiceLine, ...]:
    """129.90 + 20.00 of goods, 9.90 of shipping, a 5.00 voucher: 154.80 paid."""
    sale = shipment(
        [
            {"amount": "129.90", "tax": "21.65", "marketplace_order_line_id": "L1"},
            {"amount": "20.00", "tax": "3.33", "quantity": 2, "marketplace_order_line_id": "L2"},
        ],
        shipping="9.90",
        discount="5.00",
    )
    return invoice_of(sale).lines


def refund(status: LengowStatus, minutes: int = 0, **refunded: str) -> OrderRefunded:
    lines: list[dict[str, Any]] = [
        {"amount": "129.90", "tax": "21.65", "marketplace_order_line_id": "L1"},
        {"amount": "20.00", "tax": "3.33", "quantity": 2, "marketplace_order_line_id": "L2"},
    ]
    for line in lines:
        line["refunded_amount"] = refunded.get(line["marketplace_order_line_id"])
    sale = shipment(lines, shipping="9.90", discount="5.00")
    return OrderRefunded(
        **sale.model_dump(),
        refund_status=status,
        refunded_at=AT + timedelta(minutes=minutes),
    )


def total(lines: tuple[InvoiceLine, ...]) -> Decimal:
    return sum((line.total_incl for line in lines), D(0))


def test_a_whole_refund_credits_the_whole_invoice() -> None:
    lines = credit_lines(invoiced(), refund(LengowStatus.REFUNDED), {})
    assert total(lines) == D("-154.80")
    assert [line.key for line in lines] == [line.key for line in invoiced()]
    assert [line.vat_rate for line in lines] == [line.vat_rate for line in invoiced()]
    (discount,) = [line for line in lines if line.kind is LineKind.DISCOUNT]
    assert discount.total_incl == D("5.00")  # the voucher is given back too: it comes back


def test_a_partial_refund_credits_the_refunded_line_only() -> None:
    lines = credit_lines(invoiced(), refund(LengowStatus.PARTIAL_REFUNDED, L2="10.00"), {})
    assert [(line.key, line.total_incl, line.quantity) for line in lines] == [
        ("L2", D("-10.00"), 1)
    ]


def test_refunds_add_up_to_the_invoice_and_never_beyond() -> None:
    notes: list[tuple[InvoiceLine, ...]] = []
    for step, status, refunded in [
        (0, LengowStatus.PARTIAL_REFUNDED, {"L2": "10.00"}),
        (1, LengowStatus.PARTIAL_REFUNDED, {"L2": "10.00"}),  # nothing new
        (2, LengowStatus.PARTIAL_REFUNDED, {"L2": "20.00", "L1": "29.90"}),
        (3, LengowStatus.REFUNDED, {"L2": "20.00", "L1": "129.90"}),
        (4, LengowStatus.REFUNDED, {}),  # a later snapshot of the same refund
    ]:
        notes.append(
            credit_lines(invoiced(), refund(status, step, **refunded), credited_so_far(notes))
        )
    assert [total(note) for note in notes] == [
        D("-10.00"),
        D("0"),
        D("-39.90"),
        D("-104.90"),  # the rest: 100.00 + 9.90 of shipping - 5.00 of voucher
        D("0"),
    ]
    assert sum(total(note) for note in notes) == D("-154.80")


@pytest.mark.parametrize(
    ("refunded", "reason"),
    [
        ({}, "without Lengow's refunded_amount"),
        ({"L1": "130.00"}, "130.00 refunded on 'Article 0', invoiced 129.90"),
    ],
)
def test_partial_refunds_that_cannot_be_credited_are_held(
    refunded: dict[str, str], reason: str
) -> None:
    with pytest.raises(InvoiceHeldError, match=reason):
        credit_lines(invoiced(), refund(LengowStatus.PARTIAL_REFUNDED, **refunded), {})


def test_a_refunded_line_the_invoice_does_not_have_is_held() -> None:
    lines = tuple(line for line in invoiced() if line.key != "L2")
    with pytest.raises(InvoiceHeldError, match="L2 are not on the invoice"):
        credit_lines(lines, refund(LengowStatus.PARTIAL_REFUNDED, L2="5.00"), {})


def test_each_refund_has_its_own_key() -> None:
    first = refund(LengowStatus.PARTIAL_REFUNDED, 0)
    assert refund_key(first) != refund_key(refund(LengowStatus.PARTIAL_REFUNDED, 1))
    assert refund_key(first) != refund_key(refund(LengowStatus.REFUNDED, 0))
    assert refund_key(first) == refund_key(refund(LengowStatus.PARTIAL_REFUNDED, 0))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 12990), st.integers(0, 2000)), max_size=5))
def test_any_refunds_then_a_whole_one_credit_exactly_what_was_paid(
    steps: list[tuple[int, int]],
) -> None:
    notes: list[tuple[InvoiceLine, ...]] = []
    high = {"L1": 0, "L2": 0}
    for index, (first, second) in enumerate(steps):
        # Lengow's refunded_amount only grows
        high = {"L1": max(high["L1"], first), "L2": max(high["L2"], second)}
        cents = {key: str(D(value) / 100) for key, value in high.items() if value}
        if not cents:
            continue
        partial = refund(LengowStatus.PARTIAL_REFUNDED, index, **cents)
        notes.append(credit_lines(invoiced(), partial, credited_so_far(notes)))
        assert -sum(total(note) for note in notes) == sum(D(c) for c in cents.values())
    whole = refund(LengowStatus.REFUNDED, 99)
    notes.append(credit_lines(invoiced(), whole, credited_so_far(notes)))
    assert sum(total(note) for note in notes) == D("-154.80")
    for note in notes:
        for line in note:
            assert line.total_excl + line.vat == line.total_incl

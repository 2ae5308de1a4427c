"""ManoMano's deadlines: pure rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.processor.deadlines import (
    DEFAULT_ACCEPTANCE_DELAY,
    Phase,
    due_dates,
    phase_at,
    shipping_deadline,
)
from shared.contracts import OrderSnapshot
from tests.factories import order_snapshot

AT = datetime(2026, 12, 1, 8, 15, tzinfo=UTC)


def snapshot(**overrides: object) -> OrderSnapshot:
    data = order_snapshot(status="waiting_shipment", marketplace_order_date=AT.isoformat())
    data.update(overrides)
    return OrderSnapshot.model_validate(data)


def with_line_dates(*dates: str | None) -> OrderSnapshot:
    data = order_snapshot(status="waiting_shipment")
    cart = data["packages"][0]["cart"]
    for line, date in zip(cart, dates, strict=False):
        line["max_shipping_date"] = date
    return OrderSnapshot.model_validate(data)


def test_acceptance_is_due_the_delay_after_the_order_was_placed() -> None:
    due = due_dates(snapshot(), DEFAULT_ACCEPTANCE_DELAY)
    assert due.acceptance == AT + timedelta(hours=48)
    assert (
        due_dates(snapshot(marketplace_order_date=None), DEFAULT_ACCEPTANCE_DELAY).acceptance
        is None
    )


def test_shipment_is_due_at_the_earliest_max_shipping_date_of_the_lines() -> None:
    order = with_line_dates("2026-12-04T10:00:00+00:00", "2026-12-03T08:15:00+00:00")
    assert shipping_deadline(order) == datetime(2026, 12, 3, 8, 15, tzinfo=UTC)
    # A line without one does not hide the other's.
    assert shipping_deadline(with_line_dates(None, "2026-12-03T08:15:00Z")) == datetime(
        2026, 12, 3, 8, 15, tzinfo=UTC
    )


@pytest.mark.parametrize("key", ["order_meta", "meta"])
def test_without_line_dates_the_orders_meta_gives_it(key: str) -> None:
    order = snapshot(**{key: {"shipping_deadline": "2026-12-03T08:15:00+00:00"}})
    assert shipping_deadline(order) == datetime(2026, 12, 3, 8, 15, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, "", "soon", 42, {"when": "later"}])
def test_an_unreadable_deadline_is_no_deadline(value: object) -> None:
    assert shipping_deadline(snapshot(meta={"shipping_deadline": value})) is None
    assert shipping_deadline(with_line_dates(value if isinstance(value, str) else None)) is None


def test_a_date_without_zone_is_utc() -> None:
    assert shipping_deadline(with_line_dates("2026-12-03T08:15:00")) == datetime(
        2026, 12, 3, 8, 15, tzinfo=UTC
    )


def test_phases() -> None:
    due, lead = AT, timedelta(hours=6)
    assert phase_at(due - timedelta(hours=7), due, lead) is None
    assert phase_at(due - timedelta(hours=6), due, lead) is Phase.APPROACHING
    assert phase_at(due - timedelta(seconds=1), due, lead) is Phase.APPROACHING
    assert phase_at(due, due, lead) is Phase.MISSED
    assert phase_at(due + timedelta(days=3), due, lead) is Phase.MISSED
    assert Phase.APPROACHING.event.value == "order.deadline_approaching"
    assert Phase.MISSED.event.value == "order.deadline_missed"

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from sandbox.marketplace import Marketplace
from services.poller.orders import delivered_by_marketplace, fingerprint, parse_order
from services.poller.schedule import catchup_due, catchup_window, incremental_window

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def test_first_incremental_window_looks_back_and_later_ones_overlap() -> None:
    first = incremental_window(
        None, NOW, overlap=timedelta(minutes=2), first_lookback=timedelta(days=3)
    )
    assert (first.updated_from, first.updated_to) == (NOW - timedelta(days=3), NOW)
    mark = NOW - timedelta(minutes=15)
    later = incremental_window(
        mark, NOW, overlap=timedelta(minutes=2), first_lookback=timedelta(days=3)
    )
    assert (later.updated_from, later.updated_to) == (mark - timedelta(minutes=2), NOW)


def test_catchup_window_is_the_last_three_days() -> None:
    window = catchup_window(NOW, 3)
    assert window.updated_from == NOW - timedelta(days=3)
    assert window.updated_to == NOW


@pytest.mark.parametrize(
    ("now_time", "last", "due"),
    [
        (time(2, 59), None, False),
        (time(3, 0), None, True),
        (time(9, 0), date(2026, 11, 23), True),
        (time(9, 0), date(2026, 11, 24), False),
    ],
)
def test_catchup_is_due_once_a_day_after_its_time(
    now_time: time, last: date | None, due: bool
) -> None:
    moment = datetime.combine(NOW.date(), now_time, UTC)
    assert catchup_due(moment, time(3, 0), last) is due


def raw_order(**overrides: object) -> dict[str, object]:
    order = Marketplace(seed=1).create_order(at=NOW).raw
    order.update(overrides)
    return order


def test_lengow_order_is_read_leniently() -> None:
    raw = raw_order(
        total_order=159.8,  # a number where a string usually is
        shipping="",
        order_comments="",
        some_new_field={"kept": True},
    )
    snapshot = parse_order(raw)
    assert snapshot.currency == "EUR"
    assert snapshot.total_order == Decimal("159.8")
    assert snapshot.shipping is None
    assert snapshot.billing_address is not None
    assert snapshot.billing_address.company is None  # "" means absent
    assert snapshot.model_dump()["some_new_field"] == {"kept": True}
    assert snapshot.is_delivered_by_marketplace is False


@pytest.mark.parametrize(
    "order_types",
    [
        [{"type": "is_delivered_by_marketplace", "label": "Fulfilled by ManoMano"}],
        {"is_delivered_by_marketplace": True, "is_express": False},
    ],
)
def test_fulfillment_is_recognised_in_order_types(order_types: object) -> None:
    assert delivered_by_marketplace(raw_order(order_types=order_types))
    assert parse_order(raw_order(order_types=order_types)).is_delivered_by_marketplace


def test_missing_email_is_kept_as_absent() -> None:
    raw = raw_order()
    raw["billing_address"] = {**raw["billing_address"], "email": ""}  # type: ignore[dict-item]
    snapshot = parse_order(raw)
    assert snapshot.billing_address is not None
    assert snapshot.billing_address.email is None


@pytest.mark.parametrize(
    "broken",
    [{"updated_at": "yesterday"}, {"marketplace_order_id": None}, {"total_order": "n/a"}],
)
def test_order_that_cannot_be_understood_is_refused(broken: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        parse_order(raw_order(**broken))


def test_fingerprint_changes_with_the_order_and_only_then() -> None:
    raw = raw_order()
    same = {key: raw[key] for key in reversed(list(raw))}
    assert fingerprint(raw) == fingerprint(same)
    assert fingerprint(raw) != fingerprint({**raw, "lengow_status": "shipped"})


def test_text_with_a_nul_character_is_refused_before_the_database() -> None:
    import json

    from shared.contracts import Envelope
    from shared.envelope_parsing import parse_envelope
    from shared.settlement import UnprocessableMessageError

    body = json.dumps({"id": "x", "type": "t", "source": "s", "data": {"a": "b\u0000"}})
    with pytest.raises(UnprocessableMessageError, match="NUL character"):
        parse_envelope(body.encode(), Envelope[dict])  # type: ignore[type-arg]


def test_blank_text_is_absent_at_every_depth() -> None:
    raw = raw_order()
    package = raw["packages"][0]  # type: ignore[index]
    tracking = {"carrier": "Colissimo", "number": "6A12345678901", "url": ""}
    package["delivery"] = {**package["delivery"], "city": "  ", "trackings": [tracking]}
    raw["meta"] = {"note": "\t", "kept": "x", "tags": [""]}
    snapshot = parse_order(raw)
    delivery = snapshot.packages[0].delivery
    assert delivery is not None and delivery.city is None
    assert delivery.trackings[0].url is None and delivery.trackings[0].number == "6A12345678901"
    # Blank values in objects become null; a list's own items are left as they are.
    assert snapshot.model_dump()["meta"] == {"note": None, "kept": "x", "tags": [""]}

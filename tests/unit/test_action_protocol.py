"""Lengow's action protocol, pure: parts, matching an action Lengow lists, verdicts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.poller import action_protocol as protocol

AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def listed(**fields: object) -> dict[str, object]:
    return {
        "id": 7,
        "action_type": "ship",
        "marketplace_order_id": "M1",
        "created_at": AT.isoformat(),
        "queued": True,
        "processed": False,
        "errors": None,
        **fields,
    }


def test_a_line_level_action_is_one_part_per_line() -> None:
    parts = protocol.split_into_parts({"carrier": "colissimo", "line": ["M1-1", "M1-2"]})
    assert parts == [
        {"carrier": "colissimo", "line": "M1-1"},
        {"carrier": "colissimo", "line": "M1-2"},
    ]
    assert protocol.split_into_parts({"carrier": "colissimo"}) == [{"carrier": "colissimo"}]


def test_ours_is_the_listed_action_with_the_same_type_and_arguments() -> None:
    ours = {"carrier": "colissimo", "tracking_number": "6A1", "refund_shipping_fees": True}
    found = listed(carrier="colissimo", tracking_number="6A1", refund_shipping_fees="True")
    assert protocol.matches(found, action_type="ship", arguments=ours, not_before=AT)
    assert not protocol.matches(found, action_type="refund", arguments=ours, not_before=AT)
    other = listed(carrier="colissimo", tracking_number="6A2", refund_shipping_fees="true")
    assert not protocol.matches(other, action_type="ship", arguments=ours, not_before=AT)
    older = listed(
        carrier="colissimo",
        tracking_number="6A1",
        refund_shipping_fees="true",
        created_at=(AT - timedelta(days=2)).isoformat(),
    )
    assert not protocol.matches(older, action_type="ship", arguments=ours, not_before=AT)


def test_an_action_already_held_by_another_part_is_not_adopted_twice() -> None:
    actions = [listed(id=1, line="M1-1"), listed(id=2, line="M1-1")]
    arguments = {"line": "M1-1"}
    first = protocol.adopt(
        actions, action_type="ship", arguments=arguments, not_before=AT, taken=set()
    )
    second = protocol.adopt(
        actions, action_type="ship", arguments=arguments, not_before=AT, taken={"1"}
    )
    assert (first, second) == ("1", "2")


def test_a_command_fails_with_the_line_that_failed_and_succeeds_when_every_part_did() -> None:
    assert protocol.command_outcome([("succeeded", "L1", []), ("sent", "L2", [])]).state == "open"
    failed = protocol.command_outcome([("succeeded", "L1", []), ("failed", "L2", ["no stock"])])
    assert (failed.state, failed.errors) == ("failed", ("line L2: no stock",))
    done = protocol.command_outcome([("succeeded", None, [])])
    assert done.state == "succeeded"


def test_three_days_without_a_verdict_is_too_old() -> None:
    timeout = timedelta(days=3)
    assert not protocol.too_old(AT, AT + timedelta(days=2), timeout)
    assert protocol.too_old(AT, AT + timedelta(days=3, seconds=1), timeout)

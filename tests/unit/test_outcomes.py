"""What an outcome announces, without a server: the events of a move, the shipment's payload
taken from the snapshot, and which accepted command a move completes."""

from __future__ import annotations

from services.processor import lifecycle, outcomes
from shared.contracts import EventType, LengowStatus, OrderShipped, OrderSnapshot
from tests.factories import order_snapshot

S = LengowStatus


def snapshot(status: str) -> OrderSnapshot:
    return OrderSnapshot.model_validate(order_snapshot(status=status))


def observed(previous: lifecycle.OrderState | None, seen: OrderSnapshot) -> lifecycle.Outcome:
    return lifecycle.observe(previous, lifecycle.Observation(seen.lengow_status, seen.updated_at))


def test_a_move_to_shipped_announces_the_change_and_the_shipment() -> None:
    shipped = snapshot("shipped")
    before = lifecycle.OrderState(
        S.WAITING_SHIPMENT, shipped.updated_at.replace(year=2020), 1, False
    )
    outcome = observed(before, shipped)
    assert isinstance(outcome, lifecycle.StatusMoved)
    announced = outcomes.moved(shipped, outcome, command_id="c-1")
    assert [type for type, _ in announced] == [
        EventType.ORDER_STATUS_CHANGED,
        EventType.ORDER_SHIPPED,
    ]
    change = announced[0][1]
    assert change.model_dump()["cause"] == "command"
    assert change.model_dump()["manomano_status"] == "SHIPPED"
    shipment = announced[1][1]
    assert isinstance(shipment, OrderShipped)
    assert shipment.total_order == shipped.total_order
    assert shipment.tracking_number == next(iter(shipped.trackings())).number


def test_a_move_without_shipment_announces_only_the_change() -> None:
    accepted = snapshot("waiting_shipment")
    outcome = observed(None, accepted)
    assert isinstance(outcome, lifecycle.StatusMoved)
    announced = outcomes.moved(accepted, outcome, command_id=None)
    assert [type for type, _ in announced] == [EventType.ORDER_STATUS_CHANGED]
    assert announced[0][1].model_dump()["cause"] == "observed"


def test_a_rejected_move_says_why() -> None:
    refused = snapshot("waiting_acceptance")
    outcome = lifecycle.MoveRejected(S.SHIPPED, S.WAITING_ACCEPTANCE, "backwards")
    type, data = outcomes.rejected(refused, outcome)
    assert type is EventType.ORDER_TRANSITION_REJECTED
    assert data.model_dump()["reason"] == "backwards"


def test_a_move_completes_the_oldest_command_that_leads_to_it() -> None:
    awaiting = [("c-1", "order.refund"), ("c-2", "order.ship"), ("c-3", "order.ship")]
    assert outcomes.take_command(awaiting, S.SHIPPED) == "c-2"
    assert awaiting == [("c-1", "order.refund"), ("c-3", "order.ship")]
    assert outcomes.take_command(awaiting, S.REFUSED) is None

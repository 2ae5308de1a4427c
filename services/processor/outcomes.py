"""What an observed snapshot's outcome announces: the events each lifecycle outcome produces,
their payloads, and which accepted command it completes. Pure, no I/O."""

from __future__ import annotations

from pydantic import BaseModel

from services.processor import lifecycle
from services.processor.commands import ACTION_OUTCOMES
from shared.contracts import (
    MANOMANO_STATUS,
    Address,
    CommandType,
    EventType,
    LengowStatus,
    OrderRefunded,
    OrderShipped,
    OrderSnapshot,
    OrderStatusChanged,
    OrderTransitionRejected,
)

Announcement = tuple[EventType, BaseModel]


def moved(
    snapshot: OrderSnapshot, outcome: lifecycle.StatusMoved, command_id: str | None
) -> list[Announcement]:
    """The status change, and the shipment or refund it amounts to."""
    announced: list[Announcement] = [
        (
            EventType.ORDER_STATUS_CHANGED,
            OrderStatusChanged(
                marketplace=snapshot.marketplace,
                marketplace_order_id=snapshot.marketplace_order_id,
                from_status=outcome.from_status,
                to_status=outcome.state.status,
                manomano_status=MANOMANO_STATUS.get(outcome.state.status),
                kind=outcome.kind,
                cause="command" if command_id else "observed",
                observed_at=snapshot.updated_at,
                command_id=command_id,
            ),
        )
    ]
    if outcome.announces_shipment:
        announced.append((EventType.ORDER_SHIPPED, shipment_of(snapshot)))
    if outcome.announces_refund:
        announced.append((EventType.ORDER_REFUNDED, refund_of(snapshot)))
    return announced


def rejected(snapshot: OrderSnapshot, outcome: lifecycle.MoveRejected) -> Announcement:
    return (
        EventType.ORDER_TRANSITION_REJECTED,
        OrderTransitionRejected(
            marketplace=snapshot.marketplace,
            marketplace_order_id=snapshot.marketplace_order_id,
            current_status=outcome.current,
            observed_status=outcome.observed,
            observed_at=snapshot.updated_at,
            reason=outcome.reason,
        ),
    )


def shipment_of(snapshot: OrderSnapshot) -> OrderShipped:
    """The ``order.shipped`` payload: what an invoice needs, taken from the snapshot."""
    tracking = next(iter(snapshot.trackings()), None)
    merchant_ids = getattr(snapshot, "merchant_order_id", None)
    delivery = next((p.delivery for p in snapshot.packages if p.delivery is not None), None)
    return OrderShipped(
        marketplace=snapshot.marketplace,
        marketplace_order_id=snapshot.marketplace_order_id,
        merchant_order_id=merchant_ids if isinstance(merchant_ids, list) else None,
        marketplace_order_date=snapshot.marketplace_order_date,
        shipped_at=snapshot.updated_at,
        currency=snapshot.currency,
        billing_address=snapshot.billing_address,
        lines=snapshot.lines(),
        total_order=snapshot.total_order,
        total_tax=snapshot.total_tax,
        shipping=snapshot.shipping,
        discount=snapshot.discount,
        processing_fee=snapshot.processing_fee,
        delivery_address=(
            None
            if delivery is None
            else Address.model_validate(delivery.model_dump(exclude={"trackings"}))
        ),
        carrier=tracking.carrier if tracking else None,
        tracking_number=tracking.number if tracking else None,
        tracking_url=tracking.url if tracking else None,
        is_delivered_by_marketplace=snapshot.is_delivered_by_marketplace,
    )


def refund_of(snapshot: OrderSnapshot) -> OrderRefunded:
    """The ``order.refunded`` payload: the order as it stands once refunded, with Lengow's
    refunded amounts per line, so that the notifier can credit it without asking."""
    return OrderRefunded(
        **shipment_of(snapshot).model_dump(),
        refund_status=snapshot.lengow_status,
        refunded_at=snapshot.updated_at,
    )


def take_command(awaiting: list[tuple[str, str]], status: LengowStatus) -> str | None:
    """The oldest accepted command whose action ends in ``status``, taken from ``awaiting``
    (its id and type, oldest first): the move completes it."""
    leading = commands_leading_to(status)
    for index, (command_id, command_type) in enumerate(awaiting):
        if command_type in leading:
            del awaiting[index]
            return command_id
    return None


def commands_leading_to(status: LengowStatus) -> list[str]:
    """The command types whose action ends in ``status``."""
    return [
        CommandType(f"order.{action}").value
        for action, outcomes in ACTION_OUTCOMES.items()
        if status in outcomes
    ]

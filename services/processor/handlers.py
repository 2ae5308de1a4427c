"""What the processor does with each message: load, decide (lifecycle), store, announce."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.processor import lifecycle
from services.processor.repository import ProcessorUnitOfWork
from shared.contracts import (
    MANOMANO_STATUS,
    Envelope,
    EventType,
    OrderShipped,
    OrderSnapshot,
    OrderStatusChanged,
    OrderTransitionRejected,
    follow_up,
)
from shared.logging import get_logger
from shared.topology import EVENTS

SOURCE = "processor"

log = get_logger(__name__)


async def handle_order_changed(
    new_uow: Callable[[], ProcessorUnitOfWork], envelope: Envelope[OrderSnapshot]
) -> None:
    snapshot = envelope.data
    async with new_uow() as uow:
        if not await uow.inbox.first_delivery(envelope):
            log.info("order.duplicate_ignored")
            return
        await uow.orders.lock(snapshot)
        state = await uow.orders.get(snapshot)
        outcome = lifecycle.observe(
            state, lifecycle.Observation(snapshot.lengow_status, snapshot.updated_at)
        )

        async def emit(type: EventType, data: Any) -> None:
            await uow.outbox.add(
                EVENTS.name, follow_up(envelope, type=type, source=SOURCE, data=data)
            )

        match outcome:
            case lifecycle.Stale():
                log.info("order.stale_snapshot_ignored", observed_at=snapshot.updated_at)
            case lifecycle.SnapshotUpdated(state=new_state):
                await uow.orders.save(new_state, snapshot)
                log.info("order.snapshot_updated", version=new_state.version)
            case lifecycle.StatusMoved(
                state=new_state, from_status=from_status, kind=kind, announces_shipment=ships
            ):
                await uow.orders.save(new_state, snapshot)
                await uow.orders.add_transition(
                    snapshot,
                    from_status=from_status,
                    to_status=new_state.status,
                    kind=kind,
                    observed_at=snapshot.updated_at,
                    message_id=envelope.id,
                )
                await emit(
                    EventType.ORDER_STATUS_CHANGED,
                    OrderStatusChanged(
                        marketplace=snapshot.marketplace,
                        marketplace_order_id=snapshot.marketplace_order_id,
                        from_status=from_status,
                        to_status=new_state.status,
                        manomano_status=MANOMANO_STATUS.get(new_state.status),
                        kind=kind,
                        cause="observed",
                        observed_at=snapshot.updated_at,
                    ),
                )
                if ships:
                    await emit(EventType.ORDER_SHIPPED, shipment_of(snapshot))
                log.info(
                    "order.status_changed",
                    from_status=from_status,
                    to_status=new_state.status,
                    kind=kind,
                    shipped=ships,
                )
            case lifecycle.MoveRejected(current=current, observed=observed, reason=reason):
                await uow.orders.add_transition(
                    snapshot,
                    from_status=current,
                    to_status=observed,
                    kind="rejected",
                    observed_at=snapshot.updated_at,
                    message_id=envelope.id,
                    reason=reason,
                )
                await emit(
                    EventType.ORDER_TRANSITION_REJECTED,
                    OrderTransitionRejected(
                        marketplace=snapshot.marketplace,
                        marketplace_order_id=snapshot.marketplace_order_id,
                        current_status=current,
                        observed_status=observed,
                        observed_at=snapshot.updated_at,
                        reason=reason,
                    ),
                )
                log.warning("order.transition_rejected", reason=reason)


def shipment_of(snapshot: OrderSnapshot) -> OrderShipped:
    """The ``order.shipped`` payload: what an invoice needs, taken from the snapshot."""
    tracking = next(iter(snapshot.trackings()), None)
    merchant_ids = getattr(snapshot, "merchant_order_id", None)
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
        carrier=tracking.carrier if tracking else None,
        tracking_number=tracking.number if tracking else None,
        tracking_url=tracking.url if tracking else None,
        is_delivered_by_marketplace=snapshot.is_delivered_by_marketplace,
    )

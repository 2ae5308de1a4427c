"""What the processor does with observed snapshots (``order.changed``): load the orders, decide
each move by the lifecycle, store the states and their history, announce what happened."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from services.processor import deadlines, lifecycle, outcomes
from services.processor.deadlines import DEFAULT_ACCEPTANCE_DELAY
from services.processor.metrics import TRANSITIONS
from services.processor.repository import ProcessorWork, Transition
from shared.contracts import Envelope, EventType, OrderRef, OrderSnapshot, follow_up
from shared.logging import get_logger
from shared.settlement import UnprocessableMessageError
from shared.topology import EVENTS

SOURCE = "processor"

log = get_logger(__name__)


async def handle_order_changes(
    new_uow: Callable[[], ProcessorWork],
    envelopes: Sequence[Envelope[OrderSnapshot]],
    acceptance_delay: timedelta = DEFAULT_ACCEPTANCE_DELAY,
) -> None:
    """Apply a batch of observed snapshots in one transaction.

    Reads and writes are grouped (one query for the states, one for each kind of write), but
    the decisions are taken one snapshot at a time, in arrival order, exactly as if each had
    come alone: a batch of one is the plain case.
    """
    now = datetime.now(UTC)
    for envelope in envelopes:
        refusal = lifecycle.from_the_future(envelope.data.updated_at, now)
        if refusal is not None:
            # Fails the batch, which is then handled one delivery at a time: this one alone
            # is dead-lettered with the reason.
            raise UnprocessableMessageError(refusal)
    async with new_uow() as uow:
        fresh = await uow.inbox.first_deliveries(envelopes)
        todo = [envelope for envelope in envelopes if envelope.id in fresh]
        if len(todo) < len(envelopes):
            log.info("order.duplicates_ignored", count=len(envelopes) - len(todo))
        if not todo:
            return
        refs = sorted({_key(envelope.data) for envelope in todo})
        await uow.orders.lock_many(refs)
        states = await uow.orders.get_many(refs)
        awaiting = await uow.commands.awaiting_many(refs)
        changes = OrderChanges()
        for envelope in todo:
            _observe(envelope, states, awaiting, changes)
        due = {
            key: deadlines.due_dates(snapshot, acceptance_delay)
            for key, (_, snapshot) in changes.saved.items()
        }
        await uow.orders.save_many(changes.saved, due)
        await uow.orders.add_transitions(changes.transitions)
        await uow.commands.complete_many(changes.completed_commands)
        await uow.outbox.add_many(EVENTS.name, changes.events)


def _key(ref: OrderRef) -> tuple[str, str]:
    return (ref.marketplace, ref.marketplace_order_id)


@dataclass
class OrderChanges:
    """What a batch writes, gathered while deciding."""

    saved: dict[tuple[str, str], tuple[lifecycle.OrderState, OrderSnapshot]] = field(
        default_factory=dict
    )
    transitions: list[Transition] = field(default_factory=list)
    completed_commands: list[str] = field(default_factory=list)
    events: list[Envelope[Any]] = field(default_factory=list)


def _observe(
    envelope: Envelope[OrderSnapshot],
    states: dict[tuple[str, str], lifecycle.OrderState],
    awaiting: dict[tuple[str, str], list[tuple[str, str]]],
    changes: OrderChanges,
) -> None:
    snapshot = envelope.data
    key = _key(snapshot)
    bound = log.bind(message_id=str(envelope.id), order_id=snapshot.marketplace_order_id)
    outcome = lifecycle.observe(
        states.get(key), lifecycle.Observation(snapshot.lengow_status, snapshot.updated_at)
    )

    def emit(type: EventType, data: BaseModel) -> None:
        changes.events.append(follow_up(envelope, type=type, source=SOURCE, data=data))

    match outcome:
        case lifecycle.Stale():
            bound.info("order.stale_snapshot_ignored", observed_at=snapshot.updated_at)
        case lifecycle.SnapshotUpdated(state=new_state):
            states[key] = new_state
            changes.saved[key] = (new_state, snapshot)
        case lifecycle.StatusMoved(
            state=new_state, from_status=from_status, kind=kind, announces_shipment=ships
        ):
            states[key] = new_state
            changes.saved[key] = (new_state, snapshot)
            command_id = outcomes.take_command(awaiting.get(key, []), new_state.status)
            if command_id is not None:
                changes.completed_commands.append(command_id)
            changes.transitions.append(
                Transition(
                    ref=key,
                    from_status=from_status,
                    to_status=new_state.status,
                    kind=kind,
                    observed_at=snapshot.updated_at,
                    message_id=envelope.id,
                    command_id=command_id,
                )
            )
            for type, data in outcomes.moved(snapshot, outcome, command_id):
                emit(type, data)
            TRANSITIONS.labels(kind).inc()
            bound.info(
                "order.status_changed",
                from_status=from_status,
                to_status=new_state.status,
                kind=kind,
                shipped=ships,
            )
        case lifecycle.MoveRejected(current=current, observed=observed, reason=reason):
            changes.transitions.append(
                Transition(
                    ref=key,
                    from_status=current,
                    to_status=observed,
                    kind="rejected",
                    observed_at=snapshot.updated_at,
                    message_id=envelope.id,
                    reason=reason,
                )
            )
            emit(*outcomes.rejected(snapshot, outcome))
            TRANSITIONS.labels("rejected").inc()
            bound.warning("order.transition_rejected", reason=reason)

"""What the processor does with each message: load, decide (lifecycle), store, announce."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from services.processor import commands, deadlines, lifecycle
from services.processor.commands import ACTION_OUTCOMES
from services.processor.deadlines import DEFAULT_ACCEPTANCE_DELAY
from services.processor.metrics import COMMANDS_ANSWERED, TRANSITIONS
from services.processor.repository import ProcessorUnitOfWork, StoredCommand, Transition
from services.processor.rules import MarketplaceRules
from shared.command_intake import (
    CommandSenders,
    ReceivedCommand,
    answer_envelope,
    rejection,
    request_digest,
    sender_refusal,
)
from shared.command_intake import answer as answer_command
from shared.contracts import (
    MANOMANO_STATUS,
    Address,
    CommandAccepted,
    CommandRejected,
    CommandType,
    Envelope,
    EventType,
    LengowStatus,
    LinkOrder,
    MarketplaceRulesChanged,
    OrderActionFailed,
    OrderActionRequested,
    OrderCommand,
    OrderLinkRequested,
    OrderRef,
    OrderRefunded,
    OrderShipped,
    OrderSnapshot,
    OrderStatusChanged,
    OrderTransitionRejected,
    follow_up,
)
from shared.logging import get_logger
from shared.messaging import (
    bind_envelope,
)
from shared.settlement import UnprocessableMessageError
from shared.topology import EVENTS

SOURCE = "processor"

log = get_logger(__name__)


async def handle_order_changes(
    new_uow: Callable[[], ProcessorUnitOfWork],
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
            command_id = _take_command(awaiting.get(key, []), new_state.status)
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
            emit(
                EventType.ORDER_STATUS_CHANGED,
                OrderStatusChanged(
                    marketplace=snapshot.marketplace,
                    marketplace_order_id=snapshot.marketplace_order_id,
                    from_status=from_status,
                    to_status=new_state.status,
                    manomano_status=MANOMANO_STATUS.get(new_state.status),
                    kind=kind,
                    cause="command" if command_id else "observed",
                    observed_at=snapshot.updated_at,
                    command_id=command_id,
                ),
            )
            if ships:
                emit(EventType.ORDER_SHIPPED, shipment_of(snapshot))
            if outcome.announces_refund:
                emit(EventType.ORDER_REFUNDED, refund_of(snapshot))
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
            emit(
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
            TRANSITIONS.labels("rejected").inc()
            bound.warning("order.transition_rejected", reason=reason)


def _take_command(awaiting: list[tuple[str, str]], status: LengowStatus) -> str | None:
    """The oldest accepted command whose action ends in ``status``, now completed."""
    if not awaiting:
        return None
    leading = commands_leading_to(status)
    for index, (command_id, command_type) in enumerate(awaiting):
        if command_type in leading:
            del awaiting[index]
            return command_id
    return None


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


def commands_leading_to(status: LengowStatus) -> list[str]:
    """The command types whose action ends in ``status``."""
    return [
        CommandType(f"order.{action}").value
        for action, outcomes in ACTION_OUTCOMES.items()
        if status in outcomes
    ]


# --- Commands ------------------------------------------------------------------------------


async def store_marketplace_rules(
    new_uow: Callable[[], ProcessorUnitOfWork], envelope: Envelope[MarketplaceRulesChanged]
) -> None:
    """Keep the newest rules Lengow gave for the marketplace; commands are checked by them."""
    changed = envelope.data
    try:
        MarketplaceRules.from_document(changed.marketplace, changed.rules)
    except (AttributeError, TypeError, ValueError) as unreadable:
        raise UnprocessableMessageError(
            f"the rules of {changed.marketplace} cannot be read: {unreadable!r}"
        ) from unreadable
    async with new_uow() as uow:
        saved = await uow.rules.save(
            changed.marketplace, changed.source, changed.rules, changed.fetched_at
        )
    log.info("marketplace.rules_stored", marketplace=changed.marketplace, newer=saved)


async def record_action_failure(
    new_uow: Callable[[], ProcessorUnitOfWork], envelope: Envelope[OrderActionFailed]
) -> None:
    """The marketplace refused a command's action: the order's ship or refund is free again."""
    failed = envelope.data
    async with new_uow() as uow:
        marked = await uow.commands.mark_failed(failed.command_id, failed.errors)
    log.info("command.action_failed", command_id=failed.command_id, recorded=marked)


class CommandHandler:
    """Validates commands against the order's status and the marketplace's rules, and
    answers each one, once."""

    def __init__(
        self,
        new_uow: Callable[[], ProcessorUnitOfWork],
        *,
        carriers: Collection[str],
        refund_reasons: Collection[str],
        senders: CommandSenders,
    ) -> None:
        """``carriers`` and ``refund_reasons``: the configured values, used only until
        Lengow's marketplaces document has been read once."""
        self._new_uow = new_uow
        self._carriers = carriers
        self._refund_reasons = refund_reasons
        self._senders = senders

    async def _rules(self, uow: ProcessorUnitOfWork, marketplace: str) -> MarketplaceRules:
        stored = await uow.rules.get(marketplace)
        if stored is not None:
            return MarketplaceRules.from_document(marketplace, stored)
        return MarketplaceRules.fallback(
            marketplace, carriers=self._carriers, refund_reasons=self._refund_reasons
        )

    async def handle(self, received: ReceivedCommand) -> None:
        async with self._new_uow() as uow:
            if received.envelope is not None:
                bind_envelope(received.envelope)
                if not await uow.inbox.first_delivery(received.envelope):
                    log.info("command.duplicate_delivery_ignored")
                    return
            refusal = sender_refusal(received.command_type, received.sender, self._senders)
            if refusal is not None:
                # Not stored under its command_id: a forged command cannot take a real one's.
                await self._reject(uow, received, refusal, store=False)
                return
            digest = (
                request_digest(received.envelope.type, received.envelope.data)
                if received.envelope is not None
                else None
            )
            if received.command_id is not None:
                known = await uow.commands.get(received.command_id)
                if known is not None and known.request_digest not in (None, digest):
                    reason = (
                        f"command_id {received.command_id} was used for other arguments:"
                        " choose a new command_id for a new command"
                    )
                    await self._reject(uow, received, reason, store=False)
                    return
                if known is not None:
                    await self._answer_again(uow, received, known)
                    return
            if received.command is None:
                await self._reject(
                    uow, received, received.problem or "unreadable command", digest=digest
                )
                return

            command = received.command
            await uow.orders.lock(command)
            state = await uow.orders.get(command)
            if isinstance(command, LinkOrder):
                await self._link(uow, received, command, state is not None, digest)
                return
            decision = commands.decide(
                command,
                state.status if state else None,
                await self._rules(uow, command.marketplace),
            )
            refusal = decision.refusal or commands.already_in_flight(
                command,
                decision,
                await uow.commands.in_flight(command, received.command_type or ""),
            )
            if refusal is not None:
                await self._reject(uow, received, refusal, decision.arguments, digest=digest)
                return
            await self._accept(
                uow,
                received,
                command,
                decision.arguments,
                digest,
                EventType.ORDER_ACTION_REQUESTED,
                OrderActionRequested(
                    marketplace=command.marketplace,
                    marketplace_order_id=command.marketplace_order_id,
                    command_id=command.command_id,
                    action_type=decision.action.value,
                    arguments=decision.arguments,
                ),
            )

    async def _link(
        self,
        uow: ProcessorUnitOfWork,
        received: ReceivedCommand,
        command: LinkOrder,
        known: bool,
        digest: str | None,
    ) -> None:
        """Nothing to ask the marketplace: the poller writes the id back to Lengow."""
        if not known:
            reason = f"order {command.marketplace_order_id} is unknown: no order with this id"
            await self._reject(uow, received, reason + " has been seen", digest=digest)
            return
        arguments = {"merchant_order_id": command.merchant_order_id}
        await self._accept(
            uow,
            received,
            command,
            arguments,
            digest,
            EventType.ORDER_LINK_REQUESTED,
            OrderLinkRequested(
                marketplace=command.marketplace,
                marketplace_order_id=command.marketplace_order_id,
                command_id=command.command_id,
                merchant_order_id=command.merchant_order_id,
            ),
        )
        await uow.commands.complete_many([command.command_id])

    async def _accept(
        self,
        uow: ProcessorUnitOfWork,
        received: ReceivedCommand,
        command: OrderCommand,
        arguments: dict[str, Any],
        digest: str | None,
        follow_type: EventType,
        follow: BaseModel,
    ) -> None:
        assert received.envelope is not None
        answer = CommandAccepted(
            marketplace=command.marketplace,
            marketplace_order_id=command.marketplace_order_id,
            command_id=command.command_id,
            command_type=CommandType(received.envelope.type),
        )
        await uow.commands.add(
            command_id=command.command_id,
            command_type=received.command_type,
            ref=command,
            arguments=arguments,
            outcome="accepted",
            reason=None,
            answer_type=EventType.COMMAND_ACCEPTED,
            answer=answer.model_dump(mode="json"),
            message_id=received.envelope.id,
            request_digest=digest,
        )
        await self._answer(uow, received, EventType.COMMAND_ACCEPTED, answer)
        await uow.outbox.add(EVENTS.name, self._follow(received, follow_type, follow))
        COMMANDS_ANSWERED.labels("accepted").inc()
        log.info("command.accepted", command_id=command.command_id, follow=follow_type)

    async def _reject(
        self,
        uow: ProcessorUnitOfWork,
        received: ReceivedCommand,
        reason: str,
        arguments: dict[str, Any] | None = None,
        *,
        digest: str | None = None,
        store: bool = True,
    ) -> None:
        """``store=False``: the command_id is another command's and keeps that answer."""
        answer = rejection(received, reason)
        if received.command_id is not None and store:
            await uow.commands.add(
                command_id=received.command_id,
                command_type=received.command_type,
                ref=received.ref,
                arguments=arguments or {},
                outcome="rejected",
                reason=reason,
                answer_type=EventType.COMMAND_REJECTED,
                answer=answer.model_dump(mode="json"),
                message_id=received.envelope.id if received.envelope else None,
                request_digest=digest,
            )
        await self._answer(uow, received, EventType.COMMAND_REJECTED, answer)
        COMMANDS_ANSWERED.labels("rejected").inc()
        log.warning("command.rejected", command_id=received.command_id, reason=reason)

    async def _answer_again(
        self, uow: ProcessorUnitOfWork, received: ReceivedCommand, known: StoredCommand
    ) -> None:
        model = (
            CommandAccepted
            if known.answer_type == EventType.COMMAND_ACCEPTED
            else (CommandRejected)
        )
        answer = model.model_validate({**known.answer, "duplicate": True})
        await self._answer(uow, received, EventType(known.answer_type), answer)
        log.info("command.duplicate_answered", command_id=known.command_id, outcome=known.outcome)

    async def _answer(
        self,
        uow: ProcessorUnitOfWork,
        received: ReceivedCommand,
        type: EventType,
        answer_data: CommandAccepted | CommandRejected,
    ) -> None:
        """On the event bus, and to the caller's reply queue when it asked for one."""
        await answer_command(uow.outbox, received, type, answer_data, SOURCE)

    @staticmethod
    def _follow(received: ReceivedCommand, type: EventType, data: BaseModel) -> Envelope[Any]:
        return answer_envelope(received, type, data, SOURCE)

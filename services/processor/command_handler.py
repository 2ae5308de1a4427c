"""What the processor does with commands: validate each against the order's status and the
marketplace's rules, answer it once, and ask the poller for the action. With the two events
that keep that validation current: the marketplace's rules, and an action Lengow refused."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from pydantic import BaseModel

from services.processor import commands
from services.processor.metrics import COMMANDS_ANSWERED
from services.processor.repository import AnsweredCommand, ProcessorWork, StoredCommand
from services.processor.rules import MarketplaceRules
from shared.command_intake import (
    CommandAnswer,
    CommandSenders,
    ReceivedCommand,
    answer_envelope,
    rejection,
    request_digest,
    sender_refusal,
)
from shared.contracts import (
    CommandAccepted,
    CommandType,
    Envelope,
    EventType,
    LinkOrder,
    MarketplaceRulesChanged,
    OrderActionFailed,
    OrderActionRequested,
    OrderCommand,
    OrderLinkRequested,
)
from shared.envelope_parsing import bind_envelope
from shared.logging import get_logger
from shared.settlement import UnprocessableMessageError

SOURCE = "processor"

log = get_logger(__name__)


async def store_marketplace_rules(
    new_uow: Callable[[], ProcessorWork], envelope: Envelope[MarketplaceRulesChanged]
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
    new_uow: Callable[[], ProcessorWork], envelope: Envelope[OrderActionFailed]
) -> None:
    """The marketplace refused a command's action: the order's ship or refund is free again."""
    failed = envelope.data
    async with new_uow() as uow:
        marked = await uow.commands.mark_failed(failed.command_id, failed.errors)
    log.info("command.action_failed", command_id=failed.command_id, recorded=marked)


class CommandHandler:
    """Validates commands against the order's status and the marketplace's rules, and
    answers each one, once, in the unit of work its entry point gives it
    (:func:`shared.command_entry.answered_in_its_transaction`)."""

    def __init__(
        self,
        *,
        carriers: Collection[str],
        refund_reasons: Collection[str],
        senders: CommandSenders,
    ) -> None:
        """``carriers`` and ``refund_reasons``: the configured values, used only until
        Lengow's marketplaces document has been read once."""
        self._carriers = carriers
        self._refund_reasons = refund_reasons
        self._senders = senders

    async def _rules(self, uow: ProcessorWork, marketplace: str) -> MarketplaceRules:
        stored = await uow.rules.get(marketplace)
        if stored is not None:
            return MarketplaceRules.from_document(marketplace, stored)
        return MarketplaceRules.fallback(
            marketplace, carriers=self._carriers, refund_reasons=self._refund_reasons
        )

    async def handle(self, uow: ProcessorWork, received: ReceivedCommand) -> CommandAnswer | None:
        """The answer, with what it decided written to ``uow``; None when the delivery was
        already answered."""
        if received.envelope is not None:
            bind_envelope(received.envelope)
            if not await uow.inbox.first_delivery(received.envelope):
                log.info("command.duplicate_delivery_ignored")
                return None
        refusal = sender_refusal(received.command_type, received.sender, self._senders)
        if refusal is not None:
            # Not stored under its command_id: a forged command cannot take a real one's.
            return await self._reject(uow, received, refusal, store=False)
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
                return await self._reject(uow, received, reason, store=False)
            if known is not None:
                return self._answer_again(known)
        if received.command is None:
            problem = received.problem or "unreadable command"
            return await self._reject(uow, received, problem, digest=digest)
        return await self._decide(uow, received, received.command, digest)

    async def _decide(
        self,
        uow: ProcessorWork,
        received: ReceivedCommand,
        command: OrderCommand,
        digest: str | None,
    ) -> CommandAnswer:
        await uow.orders.lock(command)
        state = await uow.orders.get(command)
        if isinstance(command, LinkOrder):
            return await self._link(uow, received, command, state is not None, digest)
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
            return await self._reject(uow, received, refusal, decision.arguments, digest=digest)
        return await self._accept(
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
        uow: ProcessorWork,
        received: ReceivedCommand,
        command: LinkOrder,
        known: bool,
        digest: str | None,
    ) -> CommandAnswer:
        """Nothing to ask the marketplace: the poller writes the id back to Lengow."""
        if not known:
            reason = f"order {command.marketplace_order_id} is unknown: no order with this id"
            return await self._reject(uow, received, reason + " has been seen", digest=digest)
        arguments = {"merchant_order_id": command.merchant_order_id}
        answered = await self._accept(
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
        return answered

    async def _accept(
        self,
        uow: ProcessorWork,
        received: ReceivedCommand,
        command: OrderCommand,
        arguments: dict[str, Any],
        digest: str | None,
        follow_type: EventType,
        follow: BaseModel,
    ) -> CommandAnswer:
        assert received.envelope is not None
        answered = CommandAnswer.accepted(
            CommandAccepted(
                marketplace=command.marketplace,
                marketplace_order_id=command.marketplace_order_id,
                command_id=command.command_id,
                command_type=CommandType(received.envelope.type),
            ),
            follow_ups=(answer_envelope(received, follow_type, follow, SOURCE),),
        )
        await uow.commands.add(
            AnsweredCommand(
                command_id=command.command_id,
                command_type=received.command_type,
                ref=command,
                arguments=arguments,
                outcome="accepted",
                reason=None,
                answer_type=answered.event_type,
                answer=answered.data.model_dump(mode="json"),
                message_id=received.envelope.id,
                request_digest=digest,
            )
        )
        COMMANDS_ANSWERED.labels("accepted").inc()
        log.info("command.accepted", command_id=command.command_id, follow=follow_type)
        return answered

    async def _reject(
        self,
        uow: ProcessorWork,
        received: ReceivedCommand,
        reason: str,
        arguments: dict[str, Any] | None = None,
        *,
        digest: str | None = None,
        store: bool = True,
    ) -> CommandAnswer:
        """``store=False``: the command_id is another command's and keeps that answer."""
        answered = rejection(received, reason)
        if received.command_id is not None and store:
            await uow.commands.add(
                AnsweredCommand(
                    command_id=received.command_id,
                    command_type=received.command_type,
                    ref=received.ref,
                    arguments=arguments or {},
                    outcome="rejected",
                    reason=reason,
                    answer_type=answered.event_type,
                    answer=answered.data.model_dump(mode="json"),
                    message_id=received.envelope.id if received.envelope else None,
                    request_digest=digest,
                )
            )
        COMMANDS_ANSWERED.labels("rejected").inc()
        log.warning("command.rejected", command_id=received.command_id, reason=reason)
        return answered

    @staticmethod
    def _answer_again(known: StoredCommand) -> CommandAnswer:
        log.info("command.duplicate_answered", command_id=known.command_id, outcome=known.outcome)
        accepted = known.answer_type == EventType.COMMAND_ACCEPTED
        return CommandAnswer.again(accepted, known.answer, CommandAccepted)

"""Commands to the notifier: ``invoice.release``, ``invoice.send``, ``invoice.resend``.

Each ``command_id`` is obeyed once. It is recorded as running before anything is done and
answered when done, so a redelivery repeats the answer; a command found still running (its
worker died mid-way) may have emailed, and is answered as in doubt rather than run again.
A failure that may pass (SMTP or the database away, the invoice busy) before any email left
forgets the command, which runs again when redelivered.
"""

from __future__ import annotations

from collections.abc import Callable

from services.notifier.handlers import CommandRefusedError, InvoiceService
from services.notifier.mailer import InDoubtDeliveryError, PermanentDeliveryError
from services.notifier.repository import NotifierWork, StoredCommand, StoredInvoice
from shared.command_intake import (
    CommandSenders,
    ReceivedCommand,
    answer,
    rejection,
    request_digest,
    sender_refusal,
)
from shared.contracts import (
    CommandRejected,
    CommandType,
    EventType,
    InvoiceCommandAccepted,
    OrderCommand,
)
from shared.logging import get_logger

SOURCE = "notifier"

log = get_logger(__name__)


class InvoiceCommandHandler:
    def __init__(
        self,
        service: InvoiceService,
        new_uow: Callable[[], NotifierWork],
        senders: CommandSenders,
    ) -> None:
        self._service = service
        self._new_uow = new_uow
        self._senders = senders

    async def handle(self, received: ReceivedCommand) -> None:
        refusal = sender_refusal(received.command_type, received.sender, self._senders)
        if refusal is None:
            refusal = received.problem
        command = received.command
        if refusal is not None or command is None or received.envelope is None:
            # Not stored: a forged or unreadable command cannot take a real one's command_id.
            await self._reject(received, refusal or "unreadable command")
            return
        digest = request_digest(received.envelope.type, received.envelope.data)
        async with self._new_uow() as uow:
            known = await uow.commands.get(command.command_id)
            started = known is None and await uow.commands.start(
                command.command_id, received.envelope.type, command, digest
            )
        if not started:
            await self._answer_known(received, known, digest)
            return
        await self._run(received, received.envelope.type, command)

    async def _run(
        self, received: ReceivedCommand, command_type: str, command: OrderCommand
    ) -> None:
        try:
            stored = await self._obey(command_type, command)
        except CommandRefusedError as refused:
            await self._finish_rejected(received, str(refused))
        except PermanentDeliveryError as failure:
            await self._finish_rejected(received, f"the email could not be sent: {failure}")
        except InDoubtDeliveryError as doubt:
            await self._finish_rejected(
                received,
                f"the email may have been delivered but the mail server did not confirm it"
                f" ({doubt}): check its log before asking again",
            )
        except Exception:  # may pass, and nothing left: the redelivery runs it again
            async with self._new_uow() as uow:
                await uow.commands.forget(command.command_id)
            raise
        else:
            await self._finish_accepted(received, CommandType(command_type), command, stored)

    async def _obey(self, command_type: str, command: OrderCommand) -> StoredInvoice:
        match command_type:
            case CommandType.INVOICE_RELEASE:
                return await self._service.release(command)
            case CommandType.INVOICE_SEND:
                return await self._service.send_requested(command)
            case CommandType.INVOICE_RESEND:
                return await self._service.resend(command, command.command_id)
        raise CommandRefusedError(f"the notifier does not obey {command_type}")

    async def _answer_known(
        self, received: ReceivedCommand, known: StoredCommand | None, digest: str
    ) -> None:
        command_id = received.command_id
        if known is None:  # started by a concurrent delivery of the same command
            reason = f"command {command_id} is being handled: its answer follows"
        elif known.request_digest != digest:
            reason = (
                f"command_id {command_id} was used for other arguments: choose a new"
                " command_id for a new command"
            )
        elif known.outcome == "running":
            reason = (
                f"command {command_id} was interrupted while it ran: its email may have left;"
                " check the order (ordersctl show) and ask again with a new command_id"
            )
        else:
            assert known.answer is not None
            model = InvoiceCommandAccepted if known.outcome == "accepted" else CommandRejected
            type_ = (
                EventType.COMMAND_ACCEPTED
                if known.outcome == "accepted"
                else EventType.COMMAND_REJECTED
            )
            async with self._new_uow() as uow:
                data = model.model_validate({**known.answer, "duplicate": True})
                await answer(uow.outbox, received, type_, data, SOURCE)
            log.info("command.duplicate_answered", command_id=command_id, outcome=known.outcome)
            return
        await self._reject(received, reason)

    async def _finish_accepted(
        self,
        received: ReceivedCommand,
        command_type: CommandType,
        command: OrderCommand,
        stored: StoredInvoice,
    ) -> None:
        accepted = InvoiceCommandAccepted(
            marketplace=command.marketplace,
            marketplace_order_id=command.marketplace_order_id,
            command_id=command.command_id,
            command_type=command_type,
            invoice_number=stored.number,
            email_status=stored.email_status,
        )
        async with self._new_uow() as uow:
            await uow.commands.finish(
                command.command_id, "accepted", None, accepted.model_dump(mode="json")
            )
            await answer(uow.outbox, received, EventType.COMMAND_ACCEPTED, accepted, SOURCE)
        log.info("command.accepted", command_id=command.command_id, invoice=stored.number)

    async def _finish_rejected(self, received: ReceivedCommand, reason: str) -> None:
        await self._reject(received, reason, store=True)

    async def _reject(self, received: ReceivedCommand, reason: str, *, store: bool = False) -> None:
        rejected = rejection(received, reason)
        async with self._new_uow() as uow:
            if store and received.command_id is not None:
                await uow.commands.finish(
                    received.command_id, "rejected", reason, rejected.model_dump(mode="json")
                )
            await answer(uow.outbox, received, EventType.COMMAND_REJECTED, rejected, SOURCE)
        log.warning("command.rejected", command_id=received.command_id, reason=reason)

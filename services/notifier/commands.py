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
    CommandAnswer,
    CommandSenders,
    ReceivedCommand,
    rejection,
    request_digest,
    sender_refusal,
)
from shared.contracts import CommandType, InvoiceCommandAccepted, OrderCommand
from shared.logging import get_logger

SOURCE = "notifier"

log = get_logger(__name__)


class InvoiceCommandHandler:
    """Obeys each command once and returns its answer, recorded with the command first, so
    that its entry point (:func:`shared.command_entry.answered_after`) can send it after."""

    def __init__(
        self,
        service: InvoiceService,
        new_uow: Callable[[], NotifierWork],
        senders: CommandSenders,
    ) -> None:
        self._service = service
        self._new_uow = new_uow
        self._senders = senders

    async def handle(self, received: ReceivedCommand) -> CommandAnswer:
        refusal = sender_refusal(received.command_type, received.sender, self._senders)
        if refusal is None:
            refusal = received.problem
        command = received.command
        if refusal is not None or command is None or received.envelope is None:
            # Not stored: a forged or unreadable command cannot take a real one's command_id.
            return self._reject(received, refusal or "unreadable command")
        digest = request_digest(received.envelope.type, received.envelope.data)
        async with self._new_uow() as uow:
            known = await uow.commands.get(command.command_id)
            started = known is None and await uow.commands.start(
                command.command_id, received.envelope.type, command, digest
            )
        if not started:
            return self._answer_known(received, known, digest)
        return await self._run(received, received.envelope.type, command)

    async def _run(
        self, received: ReceivedCommand, command_type: str, command: OrderCommand
    ) -> CommandAnswer:
        try:
            stored = await self._obey(command_type, command)
        except CommandRefusedError as refused:
            return await self._finish_rejected(received, str(refused))
        except PermanentDeliveryError as failure:
            return await self._finish_rejected(received, f"the email could not be sent: {failure}")
        except InDoubtDeliveryError as doubt:
            return await self._finish_rejected(
                received,
                f"the email may have been delivered but the mail server did not confirm it"
                f" ({doubt}): check its log before asking again",
            )
        except Exception:  # may pass, and nothing left: the redelivery runs it again
            async with self._new_uow() as uow:
                await uow.commands.forget(command.command_id)
            raise
        return await self._finish_accepted(CommandType(command_type), command, stored)

    async def _obey(self, command_type: str, command: OrderCommand) -> StoredInvoice:
        match command_type:
            case CommandType.INVOICE_RELEASE:
                return await self._service.release(command)
            case CommandType.INVOICE_SEND:
                return await self._service.send_requested(command)
            case CommandType.INVOICE_RESEND:
                return await self._service.resend(command, command.command_id)
        raise CommandRefusedError(f"the notifier does not obey {command_type}")

    def _answer_known(
        self, received: ReceivedCommand, known: StoredCommand | None, digest: str
    ) -> CommandAnswer:
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
            log.info("command.duplicate_answered", command_id=command_id, outcome=known.outcome)
            accepted = known.outcome == "accepted"
            return CommandAnswer.again(accepted, known.answer, InvoiceCommandAccepted)
        return self._reject(received, reason)

    async def _finish_accepted(
        self, command_type: CommandType, command: OrderCommand, stored: StoredInvoice
    ) -> CommandAnswer:
        answered = CommandAnswer.accepted(
            InvoiceCommandAccepted(
                marketplace=command.marketplace,
                marketplace_order_id=command.marketplace_order_id,
                command_id=command.command_id,
                command_type=command_type,
                invoice_number=stored.number,
                email_status=stored.email_status,
            )
        )
        async with self._new_uow() as uow:
            await uow.commands.finish(
                command.command_id, "accepted", None, answered.data.model_dump(mode="json")
            )
        log.info("command.accepted", command_id=command.command_id, invoice=stored.number)
        return answered

    async def _finish_rejected(self, received: ReceivedCommand, reason: str) -> CommandAnswer:
        answered = self._reject(received, reason)
        if received.command_id is not None:
            async with self._new_uow() as uow:
                await uow.commands.finish(
                    received.command_id, "rejected", reason, answered.data.model_dump(mode="json")
                )
        return answered

    @staticmethod
    def _reject(received: ReceivedCommand, reason: str) -> CommandAnswer:
        log.warning("command.rejected", command_id=received.command_id, reason=reason)
        return rejection(received, reason)

"""Emailing a numbered document (an invoice or a credit note) exactly once.

A worker claims the document in its row, with a lease, for the length of the call: the claim
survives a PostgreSQL restart. The PDF is archived in the transaction that records the first
attempt, before the SMTP call, so no email goes out without its archived PDF; the result is
recorded after the call. An attempt whose outcome is unknown is *in doubt*: the content left
and the server's answer never came, or the worker died mid-call (its claim expired with the
status still ``sending``). It is never retried within the delivery; it is sent once more,
after ``SMTP_IN_DOUBT_PAUSE_SECONDS``, with the same Message-ID so the receiving side can
recognise it, and never a third time: then the document is failed for an operator to check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from typing import Any

from pydantic import BaseModel
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.notifier.invoice import DocumentKind, Invoice
from services.notifier.mailer import (
    InDoubtDeliveryError,
    InvoiceMailer,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    checked_recipient,
)
from services.notifier.metrics import CREDIT_NOTES, INVOICES
from services.notifier.rendering import InvoiceRenderer
from services.notifier.repository import (
    STORE_OUTAGES,
    DocumentKey,
    NotifierSession,
    NotifierStore,
    StoredInvoice,
)
from services.notifier.settings import NotifierSettings
from shared.contracts import (
    CreditNoteFailed,
    CreditNoteSent,
    Envelope,
    EventType,
    InvoiceFailed,
    InvoiceSent,
    follow_up,
)
from shared.logging import get_logger
from shared.settlement import RetryLaterError
from shared.topology import EVENTS

SOURCE = "notifier"

log = get_logger(__name__)

#: Attempts with an unknown outcome after which no email is sent again (one resend).
MOST_DOUBTFUL_ATTEMPTS = 2
RECORD_ATTEMPTS = 20


class ResendNotDueError(RetryLaterError):
    """An attempt is in doubt and its one resend waits for the pause to pass."""


@dataclass(frozen=True)
class Dispatch:
    """A numbered document to email, and what its outcome follows on the bus."""

    key: DocumentKey
    #: The event the document answers (``order.shipped``, ``order.refunded``).
    cause: Envelope[Any]
    #: The document as numbered, rebuilt from what is stored.
    document: Callable[[StoredInvoice], Invoice]
    #: Where to send it: the billing address's email.
    email: str | None
    #: False: archive it only (``INVOICE_MODE=on_request``).
    emailed: bool = True


class DocumentSender:
    def __init__(
        self,
        settings: NotifierSettings,
        store: NotifierStore,
        mailer: InvoiceMailer,
        renderer: InvoiceRenderer,
        clock: Callable[[], datetime],
    ) -> None:
        self._settings = settings
        self._store = store
        self._mailer = mailer
        self._renderer = renderer
        self._clock = clock

    async def send(
        self, session: NotifierSession, dispatch: Dispatch, stored: StoredInvoice, worker: str
    ) -> None:
        """Email the claimed document; the claim is released on any way out."""
        try:
            await self._send(session, dispatch, stored)
        except BaseException:
            try:
                await session.invoices.release(dispatch.key, worker)
            except Exception as failure:  # the lease expires on its own
                log.debug("document.release_failed", reason=str(failure))
            raise

    async def _send(
        self, session: NotifierSession, dispatch: Dispatch, stored: StoredInvoice
    ) -> None:
        document = dispatch.document(stored)
        archived = None if stored.attempts == 0 else await session.invoices.pdf(dispatch.key)
        # Rendered outside any transaction, archived with the next status change. On the event
        # loop: with the font prepared once (fonts.py) a document takes about 4 ms, and a thread
        # made the notifier a fifth slower (the GIL passed back and forth with the loop).
        pdf = archived if archived is not None else self._renderer.pdf(document)
        to_archive = None if archived is not None else pdf
        if not dispatch.emailed:
            await session.invoices.set_status(dispatch.key, "archived", pdf=to_archive)
            log.info(
                f"{_event_prefix(dispatch.key)}.archived",
                invoice_number=stored.number,
                reason="INVOICE_MODE is on_request: emailed only when asked",
            )
            return

        try:
            recipient = checked_recipient(dispatch.email)
        except PermanentDeliveryError as failure:
            await self._record_failure(session, dispatch, stored, str(failure), to_archive)
            return

        doubtful = await self._doubts_before_sending(session, dispatch, stored, to_archive)
        if doubtful is None:
            return
        # One statement, atomic and committed on its own: no transaction block needed.
        await session.invoices.set_status(
            dispatch.key, "sending", pdf=to_archive, doubtful=doubtful
        )
        message = self._mailer.compose(
            document, self._renderer.email(document), pdf, recipient, stored.message_id
        )
        if await self._deliver(session, dispatch, stored, message, doubtful):
            await self._record_sent(session, dispatch, stored, recipient)

    async def resend(
        self, dispatch: Dispatch, stored: StoredInvoice, pdf: bytes, label: str
    ) -> None:
        """The archived document once more, asked for by a person: a message of its own
        (its own Message-ID), sent once; a temporary failure is raised for a later retry, a
        delivery in doubt is raised as it is, never sent again here."""
        document = dispatch.document(stored)
        recipient = checked_recipient(dispatch.email)
        message_id = stored.message_id.replace("<", f"<{label}.", 1)
        message = self._mailer.compose(
            document, self._renderer.email(document), pdf, recipient, message_id
        )
        await self._send_retrying(message)
        log.info(
            f"{_event_prefix(dispatch.key)}.resent",
            invoice_number=stored.number,
            message_id=message_id,
        )

    async def _doubts_before_sending(
        self,
        session: NotifierSession,
        dispatch: Dispatch,
        stored: StoredInvoice,
        to_archive: bytes | None,
    ) -> int | None:
        """How many earlier attempts are in doubt, or None when no email may be sent (the
        one resend was spent: the document is failed for an operator to check)."""
        doubtful = stored.doubtful
        if stored.email_status == "sending":
            doubtful += 1  # its worker died mid-call: it may have been delivered
        if doubtful >= MOST_DOUBTFUL_ATTEMPTS:
            await self._give_up(session, dispatch, stored, doubtful, to_archive)
            return None
        due = stored.resend_after
        if stored.email_status == "in_doubt" and due is not None and self._clock() < due:
            raise ResendNotDueError(
                f"{stored.number} is in doubt; its one resend is due at {due.isoformat()}"
            )
        if doubtful:
            log.warning(
                f"{_event_prefix(dispatch.key)}.attempt_in_doubt",
                invoice_number=stored.number,
                message_id=stored.message_id,
                resolution="sending once more with the same Message-ID",
            )
        return doubtful

    async def _deliver(
        self,
        session: NotifierSession,
        dispatch: Dispatch,
        stored: StoredInvoice,
        message: Message,
        doubtful: int,
    ) -> bool:
        """Send; True once the server accepted. What is in doubt is never retried here."""
        try:
            await self._send_retrying(message)
        except PermanentDeliveryError as failure:
            await self._record_failure(session, dispatch, stored, str(failure))
            return False
        except InDoubtDeliveryError as doubt:
            await self._record_doubt(session, dispatch, stored, doubtful + 1, str(doubt))
            return False
        except TemporaryDeliveryError as failure:
            # Not accepted by the server: nothing is in doubt; the delivery is retried later.
            async with session.work() as uow:
                await uow.invoices.set_status(dispatch.key, "pending", str(failure))
            log.warning(
                f"{_event_prefix(dispatch.key)}.email_deferred",
                invoice_number=stored.number,
                reason=str(failure),
            )
            raise
        return True

    async def _send_retrying(self, message: Message) -> None:
        """Retried only while the server refuses it (nothing left): what is in doubt is
        raised at once."""
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._settings.smtp_attempts),
            wait=wait_exponential(multiplier=self._settings.smtp_backoff_seconds, max=30),
            retry=retry_if_exception_type(TemporaryDeliveryError),
            reraise=True,
        ):
            with attempt:
                await self._mailer.send(message)

    async def _record_doubt(
        self,
        session: NotifierSession,
        dispatch: Dispatch,
        stored: StoredInvoice,
        doubtful: int,
        reason: str,
    ) -> None:
        _metric(dispatch.key).labels("in_doubt").inc()
        if doubtful >= MOST_DOUBTFUL_ATTEMPTS:
            await self._give_up(session, dispatch, stored, doubtful)
            return
        resend_after = self._clock() + timedelta(seconds=self._settings.smtp_in_doubt_pause_seconds)
        await session.invoices.set_status(
            dispatch.key, "in_doubt", reason, doubtful=doubtful, resend_after=resend_after
        )
        log.warning(
            f"{_event_prefix(dispatch.key)}.attempt_in_doubt",
            invoice_number=stored.number,
            message_id=stored.message_id,
            reason=reason,
            resolution=f"sent once more with the same Message-ID after {resend_after.isoformat()}",
        )
        raise ResendNotDueError(f"{stored.number} is in doubt: {reason}")

    async def _give_up(
        self,
        session: NotifierSession,
        dispatch: Dispatch,
        stored: StoredInvoice,
        doubtful: int,
        to_archive: bytes | None = None,
    ) -> None:
        await self._record_failure(
            session,
            dispatch,
            stored,
            f"{doubtful} attempts may have been delivered but none was confirmed by the mail"
            " server: not sent a third time; check the mail server's log for Message-ID"
            f" {stored.message_id}",
            to_archive,
        )

    async def _record_sent(
        self, session: NotifierSession, dispatch: Dispatch, stored: StoredInvoice, recipient: str
    ) -> None:
        """The server accepted the email: that is recorded even if the database goes away
        meanwhile (retried on fresh connections), rather than leaving it to look in doubt."""
        type_, sent = _outcome_event(dispatch, stored, "sent", recipient)
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(RECORD_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=10),
            retry=retry_if_exception_type(STORE_OUTAGES),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number == 1:
                    await self._record_outcome(session, dispatch, "sent", None, type_, sent)
                else:
                    async with self._store.session() as fresh:
                        await self._record_outcome(fresh, dispatch, "sent", None, type_, sent)
        _metric(dispatch.key).labels("sent").inc()
        log.info(
            f"{_event_prefix(dispatch.key)}.sent",
            invoice_number=stored.number,
            message_id=stored.message_id,
        )

    async def _record_failure(
        self,
        session: NotifierSession,
        dispatch: Dispatch,
        stored: StoredInvoice,
        reason: str,
        to_archive: bytes | None = None,
    ) -> None:
        type_, failed = _outcome_event(dispatch, stored, "failed", reason)
        await self._record_outcome(session, dispatch, "failed", reason, type_, failed, to_archive)
        _metric(dispatch.key).labels("failed").inc()
        log.warning(
            f"{_event_prefix(dispatch.key)}.failed", invoice_number=stored.number, reason=reason
        )

    async def _record_outcome(
        self,
        session: NotifierSession,
        dispatch: Dispatch,
        status: str,
        error: str | None,
        type_: EventType,
        event: BaseModel,
        to_archive: bytes | None = None,
    ) -> None:
        """The email's final status and the event that says so, in one transaction (with the
        PDF, when a document that cannot be emailed is archived only now)."""
        async with session.work() as uow:
            await uow.invoices.set_status(dispatch.key, status, error, pdf=to_archive)
            await uow.outbox.add(
                EVENTS.name, follow_up(dispatch.cause, type=type_, source=SOURCE, data=event)
            )


def _event_prefix(key: DocumentKey) -> str:
    return "invoice" if key.kind is DocumentKind.INVOICE else "credit_note"


def _metric(key: DocumentKey) -> Any:
    return INVOICES if key.kind is DocumentKind.INVOICE else CREDIT_NOTES


#: The event that says how a document's email ended, by kind and outcome.
OUTCOME_EVENTS: dict[tuple[DocumentKind, str], tuple[EventType, type[BaseModel]]] = {
    (DocumentKind.INVOICE, "sent"): (EventType.INVOICE_SENT, InvoiceSent),
    (DocumentKind.INVOICE, "failed"): (EventType.INVOICE_FAILED, InvoiceFailed),
    (DocumentKind.CREDIT_NOTE, "sent"): (EventType.CREDIT_NOTE_SENT, CreditNoteSent),
    (DocumentKind.CREDIT_NOTE, "failed"): (EventType.CREDIT_NOTE_FAILED, CreditNoteFailed),
}


def _outcome_event(
    dispatch: Dispatch, stored: StoredInvoice, outcome: str, detail: str
) -> tuple[EventType, BaseModel]:
    """``detail``: the recipient of a sent email, the reason of a failed one."""
    key = dispatch.key
    data: dict[str, Any] = {
        "marketplace": key.marketplace,
        "marketplace_order_id": key.marketplace_order_id,
    }
    if key.kind is DocumentKind.INVOICE:
        data["invoice_number"] = stored.number
    else:
        data["credit_note_number"] = stored.number
        data["invoice_number"] = stored.refers_to or ""
    if outcome == "sent":
        data.update(message_id=stored.message_id, recipient=detail)
        if key.kind is DocumentKind.CREDIT_NOTE:
            data["total_incl"] = dispatch.document(stored).total_incl
    else:
        data["reason"] = detail
    type_, model = OUTCOME_EVENTS[(key.kind, outcome)]
    return type_, model.model_validate(data)

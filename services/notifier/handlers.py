"""What the notifier does with ``order.shipped``: issue the invoice once, email it once.

The invoice row is the record of everything. It is numbered in a short transaction of its own
(gapless: the number and the row commit together) so that workers do not queue on the
sequence while a PDF renders; its PDF is archived in the transaction that records the
attempt, before the SMTP call, so no email goes out without its archived PDF. The result is
recorded after the call.

A worker claims the invoice in its row, with a lease, for the length of the call: the claim
survives a PostgreSQL restart. An attempt whose outcome is unknown is *in doubt*: the content
left and the server's answer never came, or the worker died mid-call (its claim expired with
the status still ``sending``). It is never retried within the delivery; it is sent once more,
after ``SMTP_IN_DOUBT_PAUSE_SECONDS``, with the same Message-ID so the receiving side can
recognise it, and never a third time: then the invoice is failed for an operator to check.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import Message
from zoneinfo import ZoneInfo

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.notifier.invoice import Invoice, build_invoice, invoice_number
from services.notifier.mailer import (
    InDoubtDeliveryError,
    InvoiceMailer,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    checked_recipient,
    message_id_for,
)
from services.notifier.metrics import INVOICES
from services.notifier.rendering import InvoiceRenderer
from services.notifier.repository import (
    HoldRepository,
    InvoiceRepository,
    NotifierUnitOfWork,
    StoredInvoice,
)
from services.notifier.settings import NotifierSettings
from services.notifier.taxes import InvoiceHeldError
from shared.contracts import (
    Envelope,
    EventType,
    InvoiceFailed,
    InvoiceHeld,
    InvoiceSent,
    OrderShipped,
    follow_up,
)
from shared.database import Connection
from shared.logging import get_logger
from shared.settlement import RetryLaterError
from shared.topology import EVENTS

SOURCE = "notifier"
INVOICE_TIMEZONE = ZoneInfo("Europe/Paris")

log = get_logger(__name__)


#: Attempts with an unknown outcome after which no email is sent again (one resend).
MOST_DOUBTFUL_ATTEMPTS = 2
RECORD_ATTEMPTS = 20


class InvoiceBusyError(RetryLaterError):
    """Another worker is handling this order's invoice right now: try again later."""


class ResendNotDueError(RetryLaterError):
    """An attempt is in doubt and its one resend waits for the pause to pass."""


class InvoiceService:
    def __init__(
        self,
        settings: NotifierSettings,
        pool: asyncpg.Pool,
        wake_relay: Callable[[], None],
        mailer: InvoiceMailer,
        renderer: InvoiceRenderer,
        clock: Callable[[], datetime] = lambda: datetime.now(INVOICE_TIMEZONE),
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._wake_relay = wake_relay
        self._mailer = mailer
        self._renderer = renderer
        self._clock = clock
        self._seller = settings.seller()
        self._policy = settings.vat_policy()
        self._lease = timedelta(seconds=settings.invoice_claim_seconds)

    def _unit_of_work(self, conn: Connection) -> NotifierUnitOfWork:
        return NotifierUnitOfWork(self._pool, self._wake_relay, connection=conn)

    async def on_order_shipped(self, envelope: Envelope[OrderShipped]) -> None:
        shipment = envelope.data
        if shipment.is_delivered_by_marketplace and not self._settings.invoice_fulfillment_orders:
            log.info("invoice.skipped_fulfillment", reason="INVOICE_FULFILLMENT_ORDERS is false")
            return
        worker = uuid.uuid4().hex  # this attempt's claim
        async with self._pool.acquire() as conn:
            stored = await self._claimed(conn, envelope, worker)
            if stored is None:
                return
            try:
                await self._issue_and_send(conn, envelope, stored, worker)
            except BaseException:
                with contextlib.suppress(Exception):
                    await InvoiceRepository(conn).release(shipment, worker)
                raise

    async def _claimed(
        self, conn: Connection, envelope: Envelope[OrderShipped], worker: str
    ) -> StoredInvoice | None:
        """The invoice, numbered now if it was not, and claimed by ``worker``; None when it
        is already sent or failed, or held."""
        shipment = envelope.data
        repository = InvoiceRepository(conn)
        stored = await repository.get(shipment)
        if stored is None:
            reason = self.hold_reason(shipment)
            if reason is not None:
                await self._hold(conn, envelope, reason)
                return None
            try:
                return await self._number(conn, shipment, worker)
            except asyncpg.UniqueViolationError:
                raise InvoiceBusyError(
                    f"invoice of {shipment.marketplace_order_id} is being numbered"
                ) from None
        if stored.email_status in ("sent", "failed"):
            log.info(
                "invoice.already_handled",
                invoice_number=stored.number,
                email_status=stored.email_status,
            )
            return None
        claimed = await repository.claim(shipment, worker, self._lease)
        if claimed is None:
            raise InvoiceBusyError(f"invoice of {shipment.marketplace_order_id} is busy")
        return claimed

    def _invoice(self, shipment: OrderShipped, number: str, issued_on: datetime) -> Invoice:
        return build_invoice(
            shipment,
            seller=self._seller,
            number=number,
            issued_on=issued_on.date(),
            titles=self._renderer.titles,
            policy=self._policy,
        )

    def hold_reason(self, shipment: OrderShipped) -> str | None:
        """Why no invoice can be issued now, or None when it can."""
        try:
            self._invoice(shipment, "", self._clock())
        except InvoiceHeldError as held:
            return held.reason
        return None

    async def _hold(self, conn: Connection, envelope: Envelope[OrderShipped], reason: str) -> None:
        """Held, no number taken; said once per reason on the bus (``invoice.held``)."""
        shipment = envelope.data
        async with self._unit_of_work(conn) as uow:
            if await uow.holds.hold(shipment, reason, envelope.model_dump(mode="json")):
                held = InvoiceHeld(
                    marketplace=shipment.marketplace,
                    marketplace_order_id=shipment.marketplace_order_id,
                    reason=reason,
                )
                await uow.outbox.add(
                    EVENTS.name,
                    follow_up(envelope, type=EventType.INVOICE_HELD, source=SOURCE, data=held),
                )
                INVOICES.labels("held").inc()
        log.warning("invoice.held", reason=reason)

    async def recheck_holds(self) -> int:
        """Look at every held invoice again (the settings may have been fixed since): each
        that can now be issued is issued and sent. Returns how many were released."""
        async with self._pool.acquire() as conn:
            held = await HoldRepository(conn).held()
        released = 0
        for hold in held:
            envelope = Envelope[OrderShipped].model_validate(hold.shipment)
            if self.hold_reason(envelope.data) is not None:
                continue
            order_id = envelope.data.marketplace_order_id
            try:
                await self.on_order_shipped(envelope)
            except Exception as failure:  # the next start, or a release, tries again
                log.warning(
                    "invoice.release_failed", marketplace_order_id=order_id, reason=str(failure)
                )
                continue
            log.info("invoice.released", marketplace_order_id=order_id)
            released += 1
        return released

    async def _number(self, conn: Connection, shipment: OrderShipped, worker: str) -> StoredInvoice:
        """Give the invoice its number, claimed by ``worker``: the sequence row stays locked
        only for this short transaction."""
        issued = self._clock()
        async with self._unit_of_work(conn) as uow:
            await uow.holds.release(shipment)
            sequence = await uow.invoices.next_sequence(self._seller.siren, issued.year)
            number = invoice_number(self._settings.invoice_prefix, issued.year, sequence)
            invoice = self._invoice(shipment, number, issued)
            message_id = message_id_for(invoice, self._mailer.domain)
            await uow.invoices.add(
                invoice,
                seller=self._seller.siren,
                sequence=sequence,
                language=self._renderer.language,
                recipient=invoice.customer.email,
                message_id=message_id,
                claimed_by=worker,
                lease=self._lease,
            )
        log.info("invoice.issued", invoice_number=number, total=str(invoice.total_incl))
        return StoredInvoice(
            number=number,
            issued_on=invoice.issued_on,
            message_id=message_id,
            email_status="pending",
            attempts=0,
            recipient=invoice.customer.email,
        )

    async def _issue_and_send(
        self, conn: Connection, envelope: Envelope[OrderShipped], stored: StoredInvoice, worker: str
    ) -> None:
        shipment = envelope.data
        issued = datetime.combine(stored.issued_on, datetime.min.time(), INVOICE_TIMEZONE)
        invoice = self._invoice(shipment, stored.number, issued)
        archived = None if stored.attempts == 0 else await InvoiceRepository(conn).pdf(shipment)
        # Rendered outside any transaction; archived with the next status change.
        pdf = archived if archived is not None else self._renderer.pdf(invoice)
        to_archive = None if archived is not None else pdf

        try:
            recipient = checked_recipient(
                shipment.billing_address.email if shipment.billing_address else None
            )
        except PermanentDeliveryError as failure:
            await self._record_failure(conn, envelope, stored, str(failure), to_archive)
            return

        doubtful = await self._doubts_before_sending(conn, envelope, stored, to_archive)
        if doubtful is None:
            return
        # One statement, atomic and committed on its own: no transaction block needed.
        await InvoiceRepository(conn).set_status(
            shipment, "sending", pdf=to_archive, doubtful=doubtful
        )
        message = self._mailer.compose(
            invoice, self._renderer.email(invoice), pdf, recipient, stored.message_id
        )
        if await self._deliver(conn, envelope, stored, message, doubtful):
            await self._record_sent(conn, envelope, stored, recipient)

    async def _doubts_before_sending(
        self,
        conn: Connection,
        envelope: Envelope[OrderShipped],
        stored: StoredInvoice,
        to_archive: bytes | None,
    ) -> int | None:
        """How many earlier attempts are in doubt, or None when no email may be sent (the
        one resend was spent: the invoice is failed for an operator to check)."""
        doubtful = stored.doubtful
        if stored.email_status == "sending":
            doubtful += 1  # its worker died mid-call: it may have been delivered
        if doubtful >= MOST_DOUBTFUL_ATTEMPTS:
            await self._give_up(conn, envelope, stored, doubtful, to_archive)
            return None
        due = stored.resend_after
        if stored.email_status == "in_doubt" and due is not None and self._clock() < due:
            raise ResendNotDueError(
                f"invoice {stored.number} is in doubt; its one resend is due at {due.isoformat()}"
            )
        if doubtful:
            log.warning(
                "invoice.attempt_in_doubt",
                invoice_number=stored.number,
                message_id=stored.message_id,
                resolution="sending once more with the same Message-ID",
            )
        return doubtful

    async def _deliver(
        self,
        conn: Connection,
        envelope: Envelope[OrderShipped],
        stored: StoredInvoice,
        message: Message,
        doubtful: int,
    ) -> bool:
        """Send; True once the server accepted. What is in doubt is never retried here."""
        shipment = envelope.data
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(self._settings.smtp_attempts),
                wait=wait_exponential(multiplier=self._settings.smtp_backoff_seconds, max=30),
                retry=retry_if_exception_type(TemporaryDeliveryError),
                reraise=True,
            ):
                with attempt:
                    await self._mailer.send(message)
        except PermanentDeliveryError as failure:
            await self._record_failure(conn, envelope, stored, str(failure))
            return False
        except InDoubtDeliveryError as doubt:
            await self._record_doubt(conn, envelope, stored, doubtful + 1, str(doubt))
            return False
        except TemporaryDeliveryError as failure:
            # Not accepted by the server: nothing is in doubt; the delivery is retried later.
            async with self._unit_of_work(conn) as uow:
                await uow.invoices.set_status(shipment, "pending", str(failure))
            log.warning("invoice.email_deferred", invoice_number=stored.number, reason=str(failure))
            raise
        return True

    async def _record_doubt(
        self,
        conn: Connection,
        envelope: Envelope[OrderShipped],
        stored: StoredInvoice,
        doubtful: int,
        reason: str,
    ) -> None:
        INVOICES.labels("in_doubt").inc()
        if doubtful >= MOST_DOUBTFUL_ATTEMPTS:
            await self._give_up(conn, envelope, stored, doubtful)
            return
        resend_after = self._clock() + timedelta(seconds=self._settings.smtp_in_doubt_pause_seconds)
        await InvoiceRepository(conn).set_status(
            envelope.data, "in_doubt", reason, doubtful=doubtful, resend_after=resend_after
        )
        log.warning(
            "invoice.attempt_in_doubt",
            invoice_number=stored.number,
            message_id=stored.message_id,
            reason=reason,
            resolution=f"sent once more with the same Message-ID after {resend_after.isoformat()}",
        )
        raise ResendNotDueError(f"invoice {stored.number} is in doubt: {reason}")

    async def _give_up(
        self,
        conn: Connection,
        envelope: Envelope[OrderShipped],
        stored: StoredInvoice,
        doubtful: int,
        to_archive: bytes | None = None,
    ) -> None:
        await self._record_failure(
            conn,
            envelope,
            stored,
            f"{doubtful} attempts may have been delivered but none was confirmed by the mail"
            " server: not sent a third time; check the mail server's log for Message-ID"
            f" {stored.message_id}",
            to_archive,
        )

    async def _record_sent(
        self,
        conn: Connection,
        envelope: Envelope[OrderShipped],
        stored: StoredInvoice,
        recipient: str,
    ) -> None:
        """The server accepted the email: that is recorded even if the database goes away
        meanwhile (retried on fresh connections), rather than leaving it to look in doubt."""
        shipment = envelope.data
        sent = InvoiceSent(
            marketplace=shipment.marketplace,
            marketplace_order_id=shipment.marketplace_order_id,
            invoice_number=stored.number,
            message_id=stored.message_id,
            recipient=recipient,
        )
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(RECORD_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=10),
            retry=retry_if_exception_type(
                (
                    OSError,
                    asyncpg.PostgresConnectionError,
                    asyncpg.InterfaceError,
                    asyncpg.CannotConnectNowError,
                )
            ),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number == 1:
                    await self._record_outcome(conn, envelope, sent)
                else:
                    async with self._pool.acquire() as fresh:
                        await self._record_outcome(fresh, envelope, sent)
        INVOICES.labels("sent").inc()
        log.info("invoice.sent", invoice_number=stored.number, message_id=stored.message_id)

    async def _record_failure(
        self,
        conn: Connection,
        envelope: Envelope[OrderShipped],
        stored: StoredInvoice,
        reason: str,
        to_archive: bytes | None = None,
    ) -> None:
        shipment = envelope.data
        await self._record_outcome(
            conn,
            envelope,
            InvoiceFailed(
                marketplace=shipment.marketplace,
                marketplace_order_id=shipment.marketplace_order_id,
                invoice_number=stored.number,
                reason=reason,
            ),
            to_archive,
        )
        INVOICES.labels("failed").inc()
        log.warning("invoice.failed", invoice_number=stored.number, reason=reason)

    async def _record_outcome(
        self,
        conn: Connection,
        envelope: Envelope[OrderShipped],
        event: InvoiceSent | InvoiceFailed,
        to_archive: bytes | None = None,
    ) -> None:
        """The email's final status and the event that says so, in one transaction (with the
        PDF, when an invoice that cannot be emailed is archived only now)."""
        if isinstance(event, InvoiceFailed):
            status, error, type_ = "failed", event.reason, EventType.INVOICE_FAILED
        else:
            status, error, type_ = "sent", None, EventType.INVOICE_SENT
        async with self._unit_of_work(conn) as uow:
            await uow.invoices.set_status(envelope.data, status, error, pdf=to_archive)
            await uow.outbox.add(
                EVENTS.name, follow_up(envelope, type=type_, source=SOURCE, data=event)
            )

"""What the notifier does with ``order.shipped``: issue the invoice once, email it once.

The invoice row is the record of everything. It is numbered in a short transaction of its own
(gapless: the number and the row commit together) so that workers do not queue on the
sequence while a PDF renders; its PDF is archived in the transaction that records the
attempt, before the SMTP call, so no email goes out without its archived PDF. The result is
recorded after the call. A worker holds the order's
session lock across the call; finding an attempt recorded without that lock held means its
worker died mid-send: the attempt is in doubt, and the email is sent again with the same
Message-ID so the receiving side can recognise it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from services.notifier.invoice import Invoice, build_invoice, invoice_number
from services.notifier.mailer import (
    InvoiceMailer,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    checked_recipient,
    message_id_for,
)
from services.notifier.metrics import INVOICES
from services.notifier.rendering import InvoiceRenderer
from services.notifier.repository import InvoiceRepository, NotifierUnitOfWork, StoredInvoice
from services.notifier.settings import NotifierSettings
from shared.contracts import (
    Envelope,
    EventType,
    InvoiceFailed,
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


class InvoiceBusyError(RetryLaterError):
    """Another worker is handling this order's invoice right now: try again later."""


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

    def _unit_of_work(self, conn: Connection) -> NotifierUnitOfWork:
        return NotifierUnitOfWork(self._pool, self._wake_relay, connection=conn)

    async def on_order_shipped(self, envelope: Envelope[OrderShipped]) -> None:
        shipment = envelope.data
        if shipment.is_delivered_by_marketplace and not self._settings.invoice_fulfillment_orders:
            log.info("invoice.skipped_fulfillment", reason="INVOICE_FULFILLMENT_ORDERS is false")
            return
        async with (
            self._pool.acquire() as conn,
            InvoiceRepository(conn).lock(shipment) as mine,
        ):
            if not mine:
                raise InvoiceBusyError(f"invoice of {shipment.marketplace_order_id} is busy")
            await self._issue_and_send(conn, envelope)

    def _invoice(self, shipment: OrderShipped, number: str, issued_on: datetime) -> Invoice:
        return build_invoice(
            shipment,
            seller=self._seller,
            number=number,
            issued_on=issued_on.date(),
            shipping_label=self._renderer.labels["shipping"],
        )

    async def _number(self, conn: Connection, shipment: OrderShipped) -> StoredInvoice:
        """Give the invoice its number: the sequence row stays locked only for this short
        transaction."""
        issued = self._clock()
        async with self._unit_of_work(conn) as uow:
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

    async def _issue_and_send(self, conn: Connection, envelope: Envelope[OrderShipped]) -> None:
        shipment = envelope.data
        stored = await InvoiceRepository(conn).get(shipment)
        numbered_now = stored is None
        if stored is None:
            stored = await self._number(conn, shipment)
        if stored.email_status in ("sent", "failed"):
            log.info(
                "invoice.already_handled",
                invoice_number=stored.number,
                email_status=stored.email_status,
            )
            return

        issued = datetime.combine(stored.issued_on, datetime.min.time(), INVOICE_TIMEZONE)
        invoice = self._invoice(shipment, stored.number, issued)
        archived = None if numbered_now else await InvoiceRepository(conn).pdf(shipment)
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

        if stored.email_status == "sending":
            log.warning(
                "invoice.attempt_in_doubt",
                invoice_number=stored.number,
                message_id=stored.message_id,
                resolution="sending again with the same Message-ID",
            )
        # One statement, atomic and committed on its own: no transaction block needed.
        await InvoiceRepository(conn).set_status(shipment, "sending", pdf=to_archive)

        try:
            message = self._mailer.compose(
                invoice, self._renderer.email(invoice), pdf, recipient, stored.message_id
            )
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
            return
        except TemporaryDeliveryError as failure:
            # Not accepted by the server: nothing is in doubt; the delivery is retried later.
            async with self._unit_of_work(conn) as uow:
                await uow.invoices.set_status(shipment, "pending", str(failure))
            log.warning("invoice.email_deferred", invoice_number=stored.number, reason=str(failure))
            raise

        await self._record_outcome(
            conn,
            envelope,
            InvoiceSent(
                marketplace=shipment.marketplace,
                marketplace_order_id=shipment.marketplace_order_id,
                invoice_number=stored.number,
                message_id=stored.message_id,
                recipient=recipient,
            ),
        )
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

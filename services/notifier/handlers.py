"""What the notifier does with ``order.shipped`` and ``order.refunded``: issue the invoice, and
a credit note for each refund, once each; emailing them is ``sending.py``'s job.

A document is numbered in a short transaction of its own (gapless: the number and the row
commit together) so that workers do not queue on the sequence while a PDF renders. An invoice
that would not be right (``taxes.py``, ``invoice.py``) is held with its reason and takes no
number. A refund is kept until it is credited: its credit note credits what the order's
earlier credit notes did not (``credit_note.py``), numbered while the order's invoice row is
locked, so two refunds of one order never credit the same amount twice.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.notifier.credit_note import credit_lines, credited_so_far, refund_key
from services.notifier.invoice import (
    DocumentKind,
    Invoice,
    InvoiceLine,
    build_invoice,
    document_of,
    invoice_number,
)
from services.notifier.mailer import InvoiceMailer, message_id_for
from services.notifier.metrics import CREDIT_NOTES, INVOICES
from services.notifier.rendering import InvoiceRenderer
from services.notifier.repository import (
    SETTLED_EMAIL_STATUSES,
    DocumentExistsError,
    DocumentKey,
    NewDocument,
    NotifierSession,
    NotifierStore,
    NotifierWork,
    StoredInvoice,
)
from services.notifier.sending import SOURCE, Dispatch, DocumentSender
from services.notifier.settings import NotifierSettings
from services.notifier.taxes import InvoiceHeldError
from shared.contracts import (
    Envelope,
    EventType,
    InvoiceHeld,
    OrderRef,
    OrderRefunded,
    OrderShipped,
    follow_up,
)
from shared.logging import get_logger
from shared.settlement import RetryLaterError
from shared.topology import EVENTS

INVOICE_TIMEZONE = ZoneInfo("Europe/Paris")

log = get_logger(__name__)


class InvoiceBusyError(RetryLaterError):
    """Another worker is handling this document right now: try again later."""


class CommandRefusedError(Exception):
    """What a command asked cannot be done; the message says why, for the one who asked."""


class InvoiceNotIssuedError(RetryLaterError):
    """A refund arrived before its order's invoice was numbered: try again later."""


class InvoiceService:
    def __init__(
        self,
        settings: NotifierSettings,
        store: NotifierStore,
        mailer: InvoiceMailer,
        renderer: InvoiceRenderer,
        clock: Callable[[], datetime] = lambda: datetime.now(INVOICE_TIMEZONE),
    ) -> None:
        self._settings = settings
        self._store = store
        self._mailer = mailer
        self._renderer = renderer
        self._clock = clock
        self._seller = settings.seller()
        self._policy = settings.vat_policy()
        self._lease = timedelta(seconds=settings.invoice_claim_seconds)
        self._sender = DocumentSender(settings, store, mailer, renderer, clock)

    def _skipped(self, order: OrderShipped) -> bool:
        if self._settings.invoice_mode == "mandate":
            log.info("invoice.skipped_mandate", reason="INVOICE_MODE is mandate: ManoMano invoices")
            return True
        if order.is_delivered_by_marketplace and not self._settings.invoice_fulfillment_orders:
            log.info("invoice.skipped_fulfillment", reason="INVOICE_FULFILLMENT_ORDERS is false")
            return True
        return False

    # --- Invoices ------------------------------------------------------------------------

    async def on_order_shipped(self, envelope: Envelope[OrderShipped]) -> None:
        if self._skipped(envelope.data):
            return
        worker = uuid.uuid4().hex  # this attempt's claim
        async with self._store.session() as session:
            stored = await self._claimed_invoice(session, envelope, worker)
            if stored is not None:
                await self._sender.send(session, self._invoice_dispatch(envelope), stored, worker)

    def _invoice_dispatch(self, envelope: Envelope[OrderShipped]) -> Dispatch:
        shipment = envelope.data
        return Dispatch(
            key=DocumentKey.invoice_of(shipment),
            cause=envelope,
            document=lambda stored: self._issued_invoice(shipment, stored),
            email=shipment.billing_address.email if shipment.billing_address else None,
            emailed=self._settings.invoice_mode == "email_at_shipment",
        )

    async def _claimed_invoice(
        self, session: NotifierSession, envelope: Envelope[OrderShipped], worker: str
    ) -> StoredInvoice | None:
        """The invoice, numbered now if it was not, and claimed by ``worker``; None when it
        is already sent or failed, or held."""
        shipment = envelope.data
        key = DocumentKey.invoice_of(shipment)
        stored = await session.invoices.get(key)
        if stored is None:
            try:
                return await self._number_invoice(session, envelope, worker)
            except DocumentExistsError:
                raise InvoiceBusyError(
                    f"invoice of {shipment.marketplace_order_id} is being numbered"
                ) from None
        return await self._claim(session, key, stored, worker)

    async def _claim(
        self, session: NotifierSession, key: DocumentKey, stored: StoredInvoice, worker: str
    ) -> StoredInvoice | None:
        if stored.email_status in SETTLED_EMAIL_STATUSES:
            log.info(
                "invoice.already_handled",
                invoice_number=stored.number,
                email_status=stored.email_status,
            )
            return None
        claimed = await session.invoices.claim(key, worker, self._lease)
        if claimed is None:
            raise InvoiceBusyError(f"{stored.number} of {key.marketplace_order_id} is busy")
        return claimed

    def _invoice(self, shipment: OrderShipped, number: str, issued_on: date) -> Invoice:
        return build_invoice(
            shipment,
            seller=self._seller,
            number=number,
            issued_on=issued_on,
            policy=self._policy,
            language=self._settings.forced_language(),
        )

    def _issued_invoice(self, shipment: OrderShipped, stored: StoredInvoice) -> Invoice:
        """The invoice as it was numbered: its lines as stored, whatever the settings say
        now (invoices numbered before lines were stored are built again)."""
        if stored.lines is None:
            return self._invoice(shipment, stored.number, stored.issued_on)
        return document_of(
            shipment,
            seller=self._seller,
            number=stored.number,
            issued_on=stored.issued_on,
            lines=stored.lines,
            policy=self._policy,
            language=stored.language,
        )

    def hold_reason(self, shipment: OrderShipped) -> str | None:
        """Why no invoice can be issued now, or None when it can."""
        try:
            self._invoice(shipment, "", self._clock().date())
        except InvoiceHeldError as held:
            return held.reason
        return None

    async def _hold(
        self, session: NotifierSession, envelope: Envelope[OrderShipped], reason: str
    ) -> None:
        """Held, no number taken; said once per reason on the bus (``invoice.held``)."""
        shipment = envelope.data
        async with session.work() as uow:
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

    async def _number_invoice(
        self, session: NotifierSession, envelope: Envelope[OrderShipped], worker: str
    ) -> StoredInvoice | None:
        """Give the invoice its number, claimed by ``worker``, or hold it (None) when it would
        not be right. It is built before the transaction: the sequence row stays locked only
        for the short numbering."""
        shipment = envelope.data
        issued = self._clock()
        try:
            draft = self._invoice(shipment, "", issued.date())
        except InvoiceHeldError as held:
            await self._hold(session, envelope, held.reason)
            return None
        key = DocumentKey.invoice_of(shipment)
        async with session.work() as uow:
            await uow.holds.release(shipment)
            sequence = await uow.invoices.next_sequence(
                self._seller.siren, DocumentKind.INVOICE, issued.year
            )
            number = invoice_number(self._settings.invoice_prefix, issued.year, sequence)
            invoice = replace(draft, number=number)
            stored = await self._add(uow, key, invoice, sequence, worker, envelope)
        log.info("invoice.issued", invoice_number=number, total=str(invoice.total_incl))
        return stored

    async def _add(
        self,
        uow: NotifierWork,
        key: DocumentKey,
        document: Invoice,
        sequence: int,
        worker: str,
        source: Envelope[Any],
    ) -> StoredInvoice:
        new = NewDocument(
            key,
            document,
            seller=self._seller.siren,
            sequence=sequence,
            message_id=message_id_for(document, self._mailer.domain),
            claimed_by=worker,
            lease=self._lease,
            source=source.model_dump(mode="json"),
        )
        await uow.invoices.add(new)
        return new.stored()

    async def recheck_holds(self) -> int:
        """Look at every held invoice again (the settings may have been fixed since): each
        that can now be issued is issued and sent, then its order's refunds credited.
        Returns how many were released."""
        async with self._store.session() as session:
            held = await session.holds.held()
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
        await self.recheck_refunds()
        return released

    # --- On request (ordersctl invoice ...) -----------------------------------------------

    async def release(self, ref: OrderRef) -> StoredInvoice:
        """Issue the order's held invoice now that it can be right (then credit its waiting
        refunds); :class:`CommandRefusedError` says why not."""
        async with self._store.session() as session:
            issued = await session.invoices.get(DocumentKey.invoice_of(ref))
            hold = await session.holds.get(ref)
        if issued is not None:
            raise CommandRefusedError(
                f"the invoice of {ref.marketplace_order_id} is already issued: {issued.number}"
            )
        if hold is None:
            raise CommandRefusedError(f"no invoice of {ref.marketplace_order_id} is held")
        envelope = Envelope[OrderShipped].model_validate(hold.shipment)
        reason = self.hold_reason(envelope.data)
        if reason is not None:
            raise CommandRefusedError(f"the invoice is still held: {reason}")
        await self.on_order_shipped(envelope)
        async with self._store.session() as session:
            await self._credit_waiting(session, ref)
        return await self._issued(ref)

    async def send_requested(self, ref: OrderRef) -> StoredInvoice:
        """Email an invoice kept on request, once."""
        key = DocumentKey.invoice_of(ref)
        async with self._store.session() as session:
            stored = await self._issued(ref, session)
            if stored.email_status == "sent":
                raise CommandRefusedError(
                    f"{stored.number} was already emailed: `ordersctl invoice resend` sends it"
                    " again"
                )
            if stored.email_status not in ("archived", "pending", "in_doubt"):
                # pending or in doubt: an earlier request whose email is still to be done.
                raise CommandRefusedError(
                    f"{stored.number} is not kept on request (its email is {stored.email_status})"
                )
            envelope = await self._source(session, key, stored)
            await session.invoices.request_email(key)
            worker = uuid.uuid4().hex
            claimed = await session.invoices.claim(key, worker, self._lease)
            if claimed is None:
                raise InvoiceBusyError(f"{stored.number} is busy")
            dispatch = replace(self._invoice_dispatch(envelope), emailed=True)
            await self._sender.send(session, dispatch, claimed, worker)
        return await self._issued(ref)

    async def resend(self, ref: OrderRef, command_id: str) -> StoredInvoice:
        """Email the archived invoice again: the same number and PDF, a message of its own."""
        key = DocumentKey.invoice_of(ref)
        async with self._store.session() as session:
            stored = await self._issued(ref, session)
            if stored.email_status not in SETTLED_EMAIL_STATUSES:
                raise CommandRefusedError(
                    f"{stored.number} is being emailed right now ({stored.email_status})"
                )
            envelope = await self._source(session, key, stored)
            pdf = await session.invoices.pdf(key)
            if pdf is None:
                raise CommandRefusedError(f"{stored.number} has no archived PDF")
            await self._sender.resend(
                self._invoice_dispatch(envelope),
                stored,
                pdf,
                "resend-" + hashlib.sha256(command_id.encode()).hexdigest()[:16],
            )
            await session.invoices.record_resend(key)
        return stored

    async def _issued(self, ref: OrderRef, session: NotifierSession | None = None) -> StoredInvoice:
        if session is None:
            async with self._store.session() as fresh:
                return await self._issued(ref, fresh)
        stored = await session.invoices.get(DocumentKey.invoice_of(ref))
        if stored is None:
            raise CommandRefusedError(f"no invoice of {ref.marketplace_order_id} was issued")
        return stored

    @staticmethod
    async def _source(
        session: NotifierSession, key: DocumentKey, stored: StoredInvoice
    ) -> Envelope[OrderShipped]:
        source = await session.invoices.source(key)
        if source is None:
            raise CommandRefusedError(
                f"{stored.number} was issued by an older version that did not keep its order's"
                " data: `python -m services.notifier.archive` gives its PDF"
            )
        return Envelope[OrderShipped].model_validate(source)

    # --- Credit notes --------------------------------------------------------------------

    async def on_order_refunded(self, envelope: Envelope[OrderRefunded]) -> None:
        refund = envelope.data
        if self._skipped(refund):
            return
        async with self._store.session() as session:
            async with session.work() as uow:
                await uow.refunds.add(refund, refund_key(refund), envelope.model_dump(mode="json"))
            await self._credit_waiting(session, refund)
            # A credit note numbered by an earlier delivery whose email did not end (SMTP
            # away, in doubt, its worker dead): its email goes on, by the same rule.
            await self._credit(session, envelope, refund_key(refund), None)

    async def recheck_refunds(self) -> None:
        """Credit every refund still waiting (its invoice was held, or its figures were)."""
        async with self._store.session() as session:
            waiting = await session.refunds.waiting()
            orders = {
                (refund.marketplace, refund.marketplace_order_id): refund
                for refund in (
                    Envelope[OrderRefunded].model_validate(w.refund).data for w in waiting
                )
            }
            for ref in orders.values():
                try:
                    await self._credit_waiting(session, ref)
                except Exception as failure:  # redelivered refunds and the next start retry
                    log.warning(
                        "credit_note.recheck_failed",
                        marketplace_order_id=ref.marketplace_order_id,
                        reason=str(failure),
                    )

    async def _credit_waiting(self, session: NotifierSession, ref: OrderRef) -> None:
        """Credit the order's waiting refunds, oldest first, once its invoice is numbered."""
        invoice = await session.invoices.get(DocumentKey.invoice_of(ref))
        if invoice is None:
            if await session.holds.get(ref) is not None:
                log.info("credit_note.waits_for_invoice", reason="the invoice is held")
                return
            raise InvoiceNotIssuedError(
                f"the invoice of {ref.marketplace_order_id} is not numbered yet"
            )
        for waiting in await session.refunds.waiting(ref):
            envelope = Envelope[OrderRefunded].model_validate(waiting.refund)
            await self._credit(session, envelope, waiting.refund_key, invoice)

    async def _credit(
        self,
        session: NotifierSession,
        envelope: Envelope[OrderRefunded],
        key_of_refund: str,
        invoice: StoredInvoice | None,
    ) -> None:
        """The refund's credit note: numbered when it has none (with ``invoice``, the one it
        corrects), then emailed unless its email already ended."""
        refund = envelope.data
        key = DocumentKey.credit_note_of(refund, key_of_refund)
        worker = uuid.uuid4().hex
        stored = await session.invoices.get(key)
        if stored is None:
            if invoice is None:
                return
            stored = await self._number_credit_note(session, envelope, key, invoice, worker)
        elif stored.email_status in SETTLED_EMAIL_STATUSES:
            return
        else:
            stored = await self._claim(session, key, stored, worker)
        if stored is not None:
            await self._sender.send(session, self._credit_dispatch(envelope, key), stored, worker)

    def _credit_dispatch(self, envelope: Envelope[OrderRefunded], key: DocumentKey) -> Dispatch:
        refund = envelope.data
        return Dispatch(
            key=key,
            cause=envelope,
            document=lambda stored: self._credit_note(
                refund, stored.number, stored.issued_on, stored.refers_to, stored.lines or ()
            ),
            email=refund.billing_address.email if refund.billing_address else None,
            emailed=self._settings.invoice_mode == "email_at_shipment",
        )

    def _credit_note(
        self,
        refund: OrderRefunded,
        number: str,
        issued_on: date,
        refers_to: str | None,
        lines: tuple[InvoiceLine, ...],
    ) -> Invoice:
        return document_of(
            refund,
            seller=self._seller,
            number=number,
            issued_on=issued_on,
            lines=lines,
            kind=DocumentKind.CREDIT_NOTE,
            refers_to=refers_to,
            policy=self._policy,
            language=self._settings.forced_language(),
        )

    async def _number_credit_note(
        self,
        session: NotifierSession,
        envelope: Envelope[OrderRefunded],
        key: DocumentKey,
        invoice: StoredInvoice,
        worker: str,
    ) -> StoredInvoice | None:
        """Number the refund's credit note, claimed by ``worker``, while the order's invoice
        row is locked; None when nothing is left to credit or the refund is held."""
        refund = envelope.data
        issued = self._clock()
        async with session.work() as uow:
            await uow.invoices.get(DocumentKey.invoice_of(refund), for_update=True)
            if await uow.invoices.get(key) is not None:
                raise InvoiceBusyError(f"the credit note of {key.refund_key} is being numbered")
            earlier = await uow.invoices.credit_notes_of(refund)
            credited = credited_so_far(note.lines or () for note in earlier)
            try:
                lines = credit_lines(self._invoiced_lines(refund, invoice), refund, credited)
            except InvoiceHeldError as held:
                await uow.refunds.settle(refund, key.refund_key, "held", held.reason)
                CREDIT_NOTES.labels("held").inc()
                log.warning("credit_note.held", refund=key.refund_key, reason=held.reason)
                return None
            if not lines:
                await uow.refunds.settle(refund, key.refund_key, "nothing")
                log.info("credit_note.nothing_to_credit", refund=key.refund_key)
                return None
            sequence = await uow.invoices.next_sequence(
                self._seller.siren, DocumentKind.CREDIT_NOTE, issued.year
            )
            number = invoice_number(self._settings.credit_note_prefix, issued.year, sequence)
            credit_note = self._credit_note(refund, number, issued.date(), invoice.number, lines)
            stored = await self._add(uow, key, credit_note, sequence, worker, envelope)
            await uow.refunds.settle(refund, key.refund_key, "credited")
        log.info(
            "credit_note.issued",
            credit_note_number=number,
            invoice_number=invoice.number,
            total=str(credit_note.total_incl),
        )
        return stored

    def _invoiced_lines(
        self, refund: OrderRefunded, invoice: StoredInvoice
    ) -> tuple[InvoiceLine, ...]:
        """The invoice's lines as issued; for an invoice issued before they were kept, the
        same rules applied to the order's data again."""
        if invoice.lines is not None:
            return invoice.lines
        return self._invoice(refund, invoice.number, invoice.issued_on).lines

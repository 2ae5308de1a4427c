"""PostgreSQL adapter of the notifier: invoice numbers, the archive, email outcomes."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import date

from services.notifier.invoice import Invoice
from shared.contracts import OrderRef
from shared.database import Connection, session_lock
from shared.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class StoredInvoice:
    number: str
    issued_on: date
    message_id: str
    email_status: str
    attempts: int
    recipient: str | None


class InvoiceRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def lock(self, ref: OrderRef) -> AbstractAsyncContextManager[bool]:
        """The order's invoice lock, held across the SMTP call; a worker that dies releases
        it with its connection, which is how an attempt is known to be in doubt."""
        return session_lock(
            self._conn, f"lengow-orders:invoice:{ref.marketplace}:{ref.marketplace_order_id}"
        )

    async def get(self, ref: OrderRef) -> StoredInvoice | None:
        row = await self._conn.fetchrow(
            "SELECT invoice_number, issued_on, message_id, email_status, attempts, recipient"
            " FROM invoices WHERE marketplace = $1 AND marketplace_order_id = $2",
            ref.marketplace,
            ref.marketplace_order_id,
        )
        if row is None:
            return None
        return StoredInvoice(
            number=row["invoice_number"],
            issued_on=row["issued_on"],
            message_id=row["message_id"],
            email_status=row["email_status"],
            attempts=row["attempts"],
            recipient=row["recipient"],
        )

    async def next_sequence(self, seller: str, year: int) -> int:
        """The next number of ``seller`` in ``year``; the row stays locked until commit."""
        value: int = await self._conn.fetchval(
            "INSERT INTO invoice_sequences AS s (seller, year, last_value) VALUES ($1, $2, 1)"
            " ON CONFLICT (seller, year) DO UPDATE SET last_value = s.last_value + 1"
            " RETURNING last_value",
            seller,
            year,
        )
        return value

    async def add(
        self,
        invoice: Invoice,
        *,
        seller: str,
        sequence: int,
        language: str,
        recipient: str | None,
        message_id: str,
    ) -> None:
        """The numbered invoice, its PDF to be archived by :meth:`set_status`."""
        await self._conn.execute(
            "INSERT INTO invoices (marketplace, marketplace_order_id, seller, year, sequence,"
            " invoice_number, issued_on, language, currency, total_incl, recipient, message_id,"
            " email_status)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending')",
            invoice.marketplace,
            invoice.order_id,
            seller,
            invoice.issued_on.year,
            sequence,
            invoice.number,
            invoice.issued_on,
            language,
            invoice.currency,
            invoice.total_incl,
            recipient,
            message_id,
        )

    async def pdf(self, ref: OrderRef) -> bytes | None:
        value: bytes | None = await self._conn.fetchval(
            "SELECT pdf FROM invoices WHERE marketplace = $1 AND marketplace_order_id = $2",
            ref.marketplace,
            ref.marketplace_order_id,
        )
        return value

    async def set_status(
        self, ref: OrderRef, status: str, error: str | None = None, *, pdf: bytes | None = None
    ) -> None:
        """The email's status; with ``pdf``, the invoice's PDF is archived in the same
        statement (it never replaces one already archived)."""
        await self._conn.execute(
            "UPDATE invoices SET email_status = $3, last_error = $4,"
            " attempts = attempts + CASE WHEN $3 = 'sending' THEN 1 ELSE 0 END,"
            " sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END,"
            " pdf = coalesce(pdf, $5)"
            " WHERE marketplace = $1 AND marketplace_order_id = $2",
            ref.marketplace,
            ref.marketplace_order_id,
            status,
            error,
            pdf,
        )


class NotifierUnitOfWork(UnitOfWork):
    invoices: InvoiceRepository

    def bind(self, conn: Connection) -> None:
        self.invoices = InvoiceRepository(conn)

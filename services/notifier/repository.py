"""PostgreSQL adapter of the notifier: invoice numbers, the archive, email outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from services.notifier.invoice import Invoice
from shared.contracts import OrderRef
from shared.database import Connection
from shared.unit_of_work import UnitOfWork


@dataclass(frozen=True)
class StoredInvoice:
    number: str
    issued_on: date
    message_id: str
    email_status: str
    attempts: int
    recipient: str | None
    doubtful: int = 0
    resend_after: datetime | None = None


_STORED_COLUMNS = (
    "invoice_number, issued_on, message_id, email_status, attempts, recipient, doubtful,"
    " resend_after"
)


def _stored(row: asyncpg.Record) -> StoredInvoice:
    return StoredInvoice(
        number=row["invoice_number"],
        issued_on=row["issued_on"],
        message_id=row["message_id"],
        email_status=row["email_status"],
        attempts=row["attempts"],
        recipient=row["recipient"],
        doubtful=row["doubtful"],
        resend_after=row["resend_after"],
    )


class InvoiceRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def claim(self, ref: OrderRef, worker: str, lease: timedelta) -> StoredInvoice | None:
        """Take the invoice for ``lease`` unless another worker's claim still runs; returns it
        as it is once claimed (None: busy). The claim is a row state: it survives a PostgreSQL
        restart, and a worker that dies leaves it to expire; the status it left (``sending``)
        then says its attempt is in doubt."""
        row = await self._conn.fetchrow(
            "UPDATE invoices SET claimed_by = $3, claimed_until = now() + $4::interval"
            " WHERE marketplace = $1 AND marketplace_order_id = $2"
            " AND email_status NOT IN ('sent', 'failed')"
            " AND (claimed_until IS NULL OR claimed_until < now())"
            f" RETURNING {_STORED_COLUMNS}",
            ref.marketplace,
            ref.marketplace_order_id,
            worker,
            lease,
        )
        return None if row is None else _stored(row)

    async def release(self, ref: OrderRef, worker: str) -> None:
        await self._conn.execute(
            "UPDATE invoices SET claimed_by = NULL, claimed_until = NULL"
            " WHERE marketplace = $1 AND marketplace_order_id = $2 AND claimed_by = $3",
            ref.marketplace,
            ref.marketplace_order_id,
            worker,
        )

    async def get(self, ref: OrderRef) -> StoredInvoice | None:
        row = await self._conn.fetchrow(
            f"SELECT {_STORED_COLUMNS} FROM invoices"
            " WHERE marketplace = $1 AND marketplace_order_id = $2",
            ref.marketplace,
            ref.marketplace_order_id,
        )
        return None if row is None else _stored(row)

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
        claimed_by: str,
        lease: timedelta,
    ) -> None:
        """The numbered invoice, claimed by the worker that numbers it, its PDF to be
        archived by :meth:`set_status`."""
        await self._conn.execute(
            "INSERT INTO invoices (marketplace, marketplace_order_id, seller, year, sequence,"
            " invoice_number, issued_on, language, currency, total_incl, recipient, message_id,"
            " email_status, claimed_by, claimed_until)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'pending', $13,"
            " now() + $14::interval)",
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
            claimed_by,
            lease,
        )

    async def pdf(self, ref: OrderRef) -> bytes | None:
        value: bytes | None = await self._conn.fetchval(
            "SELECT pdf FROM invoices WHERE marketplace = $1 AND marketplace_order_id = $2",
            ref.marketplace,
            ref.marketplace_order_id,
        )
        return value

    async def set_status(
        self,
        ref: OrderRef,
        status: str,
        error: str | None = None,
        *,
        pdf: bytes | None = None,
        doubtful: int | None = None,
        resend_after: datetime | None = None,
    ) -> None:
        """The email's status; with ``pdf``, the invoice's PDF is archived in the same
        statement (it never replaces one already archived). Any status but ``sending`` ends
        the worker's claim."""
        await self._conn.execute(
            "UPDATE invoices SET email_status = $3, last_error = $4,"
            " attempts = attempts + CASE WHEN $3 = 'sending' THEN 1 ELSE 0 END,"
            " sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END,"
            " pdf = coalesce(pdf, $5), doubtful = coalesce($6, doubtful), resend_after = $7,"
            " claimed_by = CASE WHEN $3 = 'sending' THEN claimed_by END,"
            " claimed_until = CASE WHEN $3 = 'sending' THEN claimed_until END"
            " WHERE marketplace = $1 AND marketplace_order_id = $2",
            ref.marketplace,
            ref.marketplace_order_id,
            status,
            error,
            pdf,
            doubtful,
            resend_after,
        )


@dataclass(frozen=True)
class StoredHold:
    reason: str
    shipment: dict[str, Any]
    held_at: datetime


class HoldRepository:
    """Invoices held: the shipment kept, with the reason no invoice was issued."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def hold(self, ref: OrderRef, reason: str, shipment: dict[str, Any]) -> bool:
        """Record (or confirm) the hold; True when it is new or its reason changed."""
        previous: str | None = await self._conn.fetchval(
            "SELECT reason FROM invoice_holds WHERE marketplace = $1"
            " AND marketplace_order_id = $2 AND released_at IS NULL FOR UPDATE",
            ref.marketplace,
            ref.marketplace_order_id,
        )
        await self._conn.execute(
            "INSERT INTO invoice_holds (marketplace, marketplace_order_id, reason, shipment)"
            " VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (marketplace, marketplace_order_id) DO UPDATE SET"
            " reason = excluded.reason, shipment = excluded.shipment, checked_at = now(),"
            " held_at = CASE WHEN invoice_holds.released_at IS NULL"
            " THEN invoice_holds.held_at ELSE now() END, released_at = NULL",
            ref.marketplace,
            ref.marketplace_order_id,
            reason,
            shipment,
        )
        return previous != reason

    async def release(self, ref: OrderRef) -> None:
        await self._conn.execute(
            "UPDATE invoice_holds SET released_at = now() WHERE marketplace = $1"
            " AND marketplace_order_id = $2 AND released_at IS NULL",
            ref.marketplace,
            ref.marketplace_order_id,
        )

    async def get(self, ref: OrderRef) -> StoredHold | None:
        row = await self._conn.fetchrow(
            "SELECT reason, shipment, held_at FROM invoice_holds WHERE marketplace = $1"
            " AND marketplace_order_id = $2 AND released_at IS NULL",
            ref.marketplace,
            ref.marketplace_order_id,
        )
        return None if row is None else StoredHold(row["reason"], row["shipment"], row["held_at"])

    async def held(self) -> list[StoredHold]:
        rows = await self._conn.fetch(
            "SELECT reason, shipment, held_at FROM invoice_holds WHERE released_at IS NULL"
            " ORDER BY held_at"
        )
        return [StoredHold(r["reason"], r["shipment"], r["held_at"]) for r in rows]

    async def count(self) -> int:
        value: int = await self._conn.fetchval(
            "SELECT count(*) FROM invoice_holds WHERE released_at IS NULL"
        )
        return value


class NotifierUnitOfWork(UnitOfWork):
    invoices: InvoiceRepository
    holds: HoldRepository

    def bind(self, conn: Connection) -> None:
        self.invoices = InvoiceRepository(conn)
        self.holds = HoldRepository(conn)

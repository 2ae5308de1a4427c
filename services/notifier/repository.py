"""PostgreSQL adapter of the notifier: invoice numbers, the archive, email outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import asyncpg

from services.notifier.invoice import DocumentKind, Invoice, InvoiceLine
from services.notifier.labels import LANGUAGES, Language
from shared.contracts import OrderRef
from shared.database import Connection
from shared.unit_of_work import UnitOfWork, Work


@dataclass(frozen=True)
class DocumentKey:
    """One document of an order: its invoice, or the credit note of one of its refunds."""

    marketplace: str
    marketplace_order_id: str
    kind: DocumentKind = DocumentKind.INVOICE
    refund_key: str = ""

    @classmethod
    def invoice_of(cls, ref: OrderRef) -> DocumentKey:
        return cls(ref.marketplace, ref.marketplace_order_id)

    @classmethod
    def credit_note_of(cls, ref: OrderRef, refund_key: str) -> DocumentKey:
        return cls(ref.marketplace, ref.marketplace_order_id, DocumentKind.CREDIT_NOTE, refund_key)

    @property
    def order(self) -> OrderRef:
        return OrderRef(
            marketplace=self.marketplace, marketplace_order_id=self.marketplace_order_id
        )

    def params(self) -> tuple[str, str, str, str]:
        return (self.marketplace, self.marketplace_order_id, self.kind.value, self.refund_key)


#: A document in one of these is not emailed again by a delivery (only on request).
SETTLED_EMAIL_STATUSES = ("sent", "failed", "archived")

#: The condition on :meth:`DocumentKey.params`, always $1 to $4.
_THE_DOCUMENT = (
    " WHERE marketplace = $1 AND marketplace_order_id = $2 AND kind = $3 AND refund_key = $4"
)


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
    refers_to: str | None = None
    lines: tuple[InvoiceLine, ...] | None = None
    language: Language = "fr"


_STORED_COLUMNS = (
    "invoice_number, issued_on, message_id, email_status, attempts, recipient, doubtful,"
    " resend_after, refers_to, lines, language"
)


def _stored(row: asyncpg.Record) -> StoredInvoice:
    lines = row["lines"]
    return StoredInvoice(
        number=row["invoice_number"],
        issued_on=row["issued_on"],
        message_id=row["message_id"],
        email_status=row["email_status"],
        attempts=row["attempts"],
        recipient=row["recipient"],
        doubtful=row["doubtful"],
        resend_after=row["resend_after"],
        refers_to=row["refers_to"],
        lines=None if lines is None else tuple(InvoiceLine.from_json(line) for line in lines),
        language=_language(row["language"]),
    )


def _language(stored: str) -> Language:
    return stored if stored in LANGUAGES else "fr"


@dataclass(frozen=True)
class StoredRefund:
    refund_key: str
    refund: dict[str, Any]


@dataclass(frozen=True)
class StoredHold:
    reason: str
    shipment: dict[str, Any]
    held_at: datetime


@dataclass(frozen=True)
class StoredCommand:
    command_id: str
    request_digest: str
    outcome: str
    answer: dict[str, Any] | None


@dataclass(frozen=True)
class NewDocument:
    """A document as it is numbered, and what is kept beside it."""

    key: DocumentKey
    document: Invoice
    seller: str
    sequence: int
    message_id: str
    #: The worker that numbers it holds it for ``lease``.
    claimed_by: str
    lease: timedelta
    #: The event it answers, kept to email it later.
    source: dict[str, Any]

    def stored(self) -> StoredInvoice:
        """The document as it reads back once added: pending, never attempted."""
        document = self.document
        return StoredInvoice(
            number=document.number,
            issued_on=document.issued_on,
            message_id=self.message_id,
            email_status="pending",
            attempts=0,
            recipient=document.customer.email,
            refers_to=document.refers_to,
            lines=document.lines,
            language=document.language,
        )


class DocumentExistsError(Exception):
    """The document was numbered already (by a concurrent delivery): nothing was added."""


#: Failures of the store that a fresh connection may not meet: worth a retry.
STORE_OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)


class Invoices(Protocol):
    """Invoices and credit notes: their numbers, archived PDFs and emails' fate."""

    async def claim(
        self, key: DocumentKey, worker: str, lease: timedelta
    ) -> StoredInvoice | None: ...

    async def release(self, key: DocumentKey, worker: str) -> None: ...

    async def get(self, key: DocumentKey, *, for_update: bool = False) -> StoredInvoice | None: ...

    async def credit_notes_of(self, ref: OrderRef) -> list[StoredInvoice]: ...

    async def next_sequence(self, seller: str, series: DocumentKind, year: int) -> int: ...

    async def add(self, new: NewDocument) -> None:
        """Raises :class:`DocumentExistsError` when the document is numbered already."""
        ...

    async def source(self, key: DocumentKey) -> dict[str, Any] | None: ...

    async def request_email(self, key: DocumentKey) -> bool: ...

    async def record_resend(self, key: DocumentKey) -> None: ...

    async def pdf(self, key: DocumentKey) -> bytes | None: ...

    async def set_status(
        self,
        key: DocumentKey,
        status: str,
        error: str | None = None,
        *,
        pdf: bytes | None = None,
        doubtful: int | None = None,
        resend_after: datetime | None = None,
    ) -> None: ...


class Refunds(Protocol):
    async def add(self, ref: OrderRef, refund_key: str, refund: dict[str, Any]) -> None: ...

    async def waiting(self, ref: OrderRef | None = None) -> list[StoredRefund]: ...

    async def settle(
        self, ref: OrderRef, refund_key: str, outcome: str, reason: str | None = None
    ) -> None: ...


class Holds(Protocol):
    async def hold(self, ref: OrderRef, reason: str, shipment: dict[str, Any]) -> bool: ...

    async def release(self, ref: OrderRef) -> None: ...

    async def get(self, ref: OrderRef) -> StoredHold | None: ...

    async def held(self) -> list[StoredHold]: ...

    async def count(self) -> int: ...


class NotifierCommands(Protocol):
    async def get(self, command_id: str) -> StoredCommand | None: ...

    async def start(
        self, command_id: str, command_type: str, ref: OrderRef, request_digest: str
    ) -> bool: ...

    async def finish(
        self, command_id: str, outcome: str, reason: str | None, answer: dict[str, Any]
    ) -> None: ...

    async def forget(self, command_id: str) -> None: ...


class NotifierWork(Work, Protocol):
    """One transaction over the notifier's stores, as the handlers use it."""

    @property
    def invoices(self) -> Invoices: ...

    @property
    def holds(self) -> Holds: ...

    @property
    def refunds(self) -> Refunds: ...

    @property
    def commands(self) -> NotifierCommands: ...


class NotifierSession(Protocol):
    """The store as one delivery holds it while it works on a document: each read and write
    of the repositories stands on its own (one statement, committed at once); ``work`` is a
    transaction in the same session."""

    @property
    def invoices(self) -> Invoices: ...

    @property
    def holds(self) -> Holds: ...

    @property
    def refunds(self) -> Refunds: ...

    def work(self) -> NotifierWork: ...


class NotifierStore(Protocol):
    """Where the notifier keeps its documents: PostgreSQL in production, memory in the
    handlers' unit tests (``memory.py``)."""

    def session(self) -> AbstractAsyncContextManager[NotifierSession]: ...

    def work(self) -> NotifierWork:
        """A transaction of its own."""
        ...


class InvoiceRepository:
    """Invoices and credit notes: their numbers, archived PDFs and emails' fate."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def claim(self, key: DocumentKey, worker: str, lease: timedelta) -> StoredInvoice | None:
        """Take the document for ``lease`` unless another worker's claim still runs; returns
        it as it is once claimed (None: busy). The claim is a row state: it survives a
        PostgreSQL restart, and a worker that dies leaves it to expire; the status it left
        (``sending``) then says its attempt is in doubt."""
        row = await self._conn.fetchrow(
            "UPDATE invoices SET claimed_by = $5, claimed_until = now() + $6::interval"
            + _THE_DOCUMENT
            + " AND email_status <> ALL($7::text[])"
            " AND (claimed_until IS NULL OR claimed_until < now())"
            f" RETURNING {_STORED_COLUMNS}",
            *key.params(),
            worker,
            lease,
            list(SETTLED_EMAIL_STATUSES),
        )
        return None if row is None else _stored(row)

    async def release(self, key: DocumentKey, worker: str) -> None:
        await self._conn.execute(
            "UPDATE invoices SET claimed_by = NULL, claimed_until = NULL"
            + _THE_DOCUMENT
            + " AND claimed_by = $5",
            *key.params(),
            worker,
        )

    async def get(self, key: DocumentKey, *, for_update: bool = False) -> StoredInvoice | None:
        row = await self._conn.fetchrow(
            f"SELECT {_STORED_COLUMNS} FROM invoices"
            + _THE_DOCUMENT
            + (" FOR UPDATE" if for_update else ""),
            *key.params(),
        )
        return None if row is None else _stored(row)

    async def credit_notes_of(self, ref: OrderRef) -> list[StoredInvoice]:
        rows = await self._conn.fetch(
            f"SELECT {_STORED_COLUMNS} FROM invoices WHERE marketplace = $1"
            " AND marketplace_order_id = $2 AND kind = 'credit_note' ORDER BY sequence",
            ref.marketplace,
            ref.marketplace_order_id,
        )
        return [_stored(row) for row in rows]

    async def next_sequence(self, seller: str, series: DocumentKind, year: int) -> int:
        """The next number of ``seller``'s ``series`` in ``year``; the row stays locked until
        commit."""
        value: int = await self._conn.fetchval(
            "INSERT INTO invoice_sequences AS s (seller, series, year, last_value)"
            " VALUES ($1, $2, $3, 1) ON CONFLICT (seller, series, year)"
            " DO UPDATE SET last_value = s.last_value + 1 RETURNING last_value",
            seller,
            series.value,
            year,
        )
        return value

    async def add(self, new: NewDocument) -> None:
        """The numbered document, claimed by the worker that numbers it, its PDF to be
        archived by :meth:`set_status`."""
        document = new.document
        try:
            await self._conn.execute(
                "INSERT INTO invoices (marketplace, marketplace_order_id, kind, refund_key, seller,"
                " year, sequence, invoice_number, issued_on, language, currency, total_incl,"
                " recipient, message_id, email_status, claimed_by, claimed_until, refers_to, lines,"
                " source)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'pending',"
                " $15, now() + $16::interval, $17, $18, $19)",
                *new.key.params(),
                new.seller,
                document.issued_on.year,
                new.sequence,
                document.number,
                document.issued_on,
                document.language,
                document.currency,
                document.total_incl,
                document.customer.email,
                new.message_id,
                new.claimed_by,
                new.lease,
                document.refers_to,
                [line.to_json() for line in document.lines],
                new.source,
            )
        except asyncpg.UniqueViolationError:
            raise DocumentExistsError(f"{new.key} is numbered already") from None

    async def source(self, key: DocumentKey) -> dict[str, Any] | None:
        """The event the document answers, kept to email it later."""
        value: dict[str, Any] | None = await self._conn.fetchval(
            "SELECT source FROM invoices" + _THE_DOCUMENT, *key.params()
        )
        return value

    async def request_email(self, key: DocumentKey) -> bool:
        """An archived document becomes due for its email; False when it was not archived."""
        status: str | None = await self._conn.fetchval(
            "UPDATE invoices SET email_status = 'pending'"
            + _THE_DOCUMENT
            + " AND email_status = 'archived' RETURNING email_status",
            *key.params(),
        )
        return status is not None

    async def record_resend(self, key: DocumentKey) -> None:
        await self._conn.execute(
            "UPDATE invoices SET resends = resends + 1, last_resent_at = now()" + _THE_DOCUMENT,
            *key.params(),
        )

    async def pdf(self, key: DocumentKey) -> bytes | None:
        value: bytes | None = await self._conn.fetchval(
            "SELECT pdf FROM invoices" + _THE_DOCUMENT, *key.params()
        )
        return value

    async def set_status(
        self,
        key: DocumentKey,
        status: str,
        error: str | None = None,
        *,
        pdf: bytes | None = None,
        doubtful: int | None = None,
        resend_after: datetime | None = None,
    ) -> None:
        """The email's status; with ``pdf``, the document's PDF is archived in the same
        statement (it never replaces one already archived). Any status but ``sending`` ends
        the worker's claim."""
        await self._conn.execute(
            "UPDATE invoices SET email_status = $5, last_error = $6,"
            " attempts = attempts + CASE WHEN $5 = 'sending' THEN 1 ELSE 0 END,"
            " sent_at = CASE WHEN $5 = 'sent' THEN now() ELSE sent_at END,"
            " pdf = coalesce(pdf, $7), doubtful = coalesce($8, doubtful), resend_after = $9,"
            " claimed_by = CASE WHEN $5 = 'sending' THEN claimed_by END,"
            " claimed_until = CASE WHEN $5 = 'sending' THEN claimed_until END" + _THE_DOCUMENT,
            *key.params(),
            status,
            error,
            pdf,
            doubtful,
            resend_after,
        )


class RefundRepository:
    """The refunds announced, until each is credited."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def add(self, ref: OrderRef, refund_key: str, refund: dict[str, Any]) -> None:
        await self._conn.execute(
            "INSERT INTO refunds (marketplace, marketplace_order_id, refund_key, refund)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            ref.marketplace,
            ref.marketplace_order_id,
            refund_key,
            refund,
        )

    async def waiting(self, ref: OrderRef | None = None) -> list[StoredRefund]:
        """Refunds not settled yet, oldest first (of one order, or of all)."""
        rows = await self._conn.fetch(
            "SELECT refund_key, refund FROM refunds WHERE settled_at IS NULL"
            " AND ($1::text IS NULL OR (marketplace = $1 AND marketplace_order_id = $2))"
            " ORDER BY received_at, refund_key",
            ref.marketplace if ref else None,
            ref.marketplace_order_id if ref else None,
        )
        return [StoredRefund(row["refund_key"], row["refund"]) for row in rows]

    async def settle(
        self, ref: OrderRef, refund_key: str, outcome: str, reason: str | None = None
    ) -> None:
        await self._conn.execute(
            "UPDATE refunds SET outcome = $4, reason = $5,"
            " settled_at = CASE WHEN $4 = 'held' THEN NULL ELSE now() END"
            " WHERE marketplace = $1 AND marketplace_order_id = $2 AND refund_key = $3",
            ref.marketplace,
            ref.marketplace_order_id,
            refund_key,
            outcome,
            reason,
        )


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


class CommandRepository:
    """Commands to the notifier, each command_id obeyed once."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def get(self, command_id: str) -> StoredCommand | None:
        row = await self._conn.fetchrow(
            "SELECT command_id, request_digest, outcome, answer FROM commands"
            " WHERE command_id = $1",
            command_id,
        )
        if row is None:
            return None
        return StoredCommand(
            row["command_id"], row["request_digest"], row["outcome"], row["answer"]
        )

    async def start(
        self, command_id: str, command_type: str, ref: OrderRef, request_digest: str
    ) -> bool:
        """Recorded as running; False when the command_id is already known."""
        status: str | None = await self._conn.fetchval(
            "INSERT INTO commands (command_id, command_type, marketplace, marketplace_order_id,"
            " request_digest, outcome) VALUES ($1, $2, $3, $4, $5, 'running')"
            " ON CONFLICT DO NOTHING RETURNING outcome",
            command_id,
            command_type,
            ref.marketplace,
            ref.marketplace_order_id,
            request_digest,
        )
        return status is not None

    async def finish(
        self, command_id: str, outcome: str, reason: str | None, answer: dict[str, Any]
    ) -> None:
        await self._conn.execute(
            "UPDATE commands SET outcome = $2, reason = $3, answer = $4, completed_at = now()"
            " WHERE command_id = $1",
            command_id,
            outcome,
            reason,
            answer,
        )

    async def forget(self, command_id: str) -> None:
        """Nothing was done: the command may run again when redelivered."""
        await self._conn.execute(
            "DELETE FROM commands WHERE command_id = $1 AND outcome = 'running'", command_id
        )


class NotifierUnitOfWork(UnitOfWork):
    invoices: InvoiceRepository
    holds: HoldRepository
    refunds: RefundRepository
    commands: CommandRepository

    def bind(self, conn: Connection) -> None:
        self.invoices = InvoiceRepository(conn)
        self.holds = HoldRepository(conn)
        self.refunds = RefundRepository(conn)
        self.commands = CommandRepository(conn)


class PostgresNotifierSession:
    """One pooled connection, held for a delivery."""

    def __init__(self, conn: Connection, pool: asyncpg.Pool, wake_relay: Callable[[], None]):
        self._conn = conn
        self._pool = pool
        self._wake_relay = wake_relay
        self.invoices = InvoiceRepository(conn)
        self.holds = HoldRepository(conn)
        self.refunds = RefundRepository(conn)

    def work(self) -> NotifierUnitOfWork:
        return NotifierUnitOfWork(self._pool, self._wake_relay, connection=self._conn)


class PostgresNotifierStore:
    def __init__(self, pool: asyncpg.Pool, wake_relay: Callable[[], None]) -> None:
        self._pool = pool
        self._wake_relay = wake_relay

    @asynccontextmanager
    async def session(self) -> AsyncIterator[PostgresNotifierSession]:
        async with self._pool.acquire() as conn:
            yield PostgresNotifierSession(conn, self._pool, self._wake_relay)

    def work(self) -> NotifierUnitOfWork:
        return NotifierUnitOfWork(self._pool, self._wake_relay)


#: mypy holds the PostgreSQL store to the protocol the handlers take.
_STORE: Callable[[asyncpg.Pool, Callable[[], None]], NotifierStore] = PostgresNotifierStore

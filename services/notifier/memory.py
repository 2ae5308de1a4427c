"""The notifier's stores in memory: what ``repository.py`` keeps in PostgreSQL, for the
handlers' unit tests, which then need no server.

One suite of store tests (``tests/notifier_store.py``) runs against both, so the two behave
alike where the handlers can tell. Memory plays the claims' leases (against the clock it is
given) but not concurrency: ``get(for_update=True)`` locks nothing, as one test runs one
handler at a time; the PostgreSQL locks are proven by the integration and fault tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from services.notifier.invoice import DocumentKind
from services.notifier.repository import (
    SETTLED_EMAIL_STATUSES,
    DocumentExistsError,
    DocumentKey,
    NewDocument,
    NotifierStore,
    StoredCommand,
    StoredHold,
    StoredInvoice,
    StoredRefund,
)
from shared.contracts import OrderRef
from shared.outbox import OutboxMessage
from shared.unit_of_work import MemoryTransaction

Clock = Callable[[], datetime]
OrderKey = tuple[str, str]


@dataclass
class DocumentRow:
    """One row of ``invoices``: the document as the handlers read it, and its bookkeeping."""

    stored: StoredInvoice
    sequence: int
    source: dict[str, Any]
    claimed_by: str | None = None
    claimed_until: datetime | None = None
    pdf: bytes | None = None
    last_error: str | None = None
    sent_at: datetime | None = None
    resends: int = 0


@dataclass
class RefundRow:
    stored: StoredRefund
    outcome: str | None = None
    reason: str | None = None
    settled: bool = False


@dataclass
class HoldRow:
    stored: StoredHold
    released: bool = False


@dataclass
class CommandRow:
    stored: StoredCommand
    command_type: str
    ref: OrderKey
    reason: str | None = None


@dataclass
class NotifierData:
    """Everything the notifier's schema holds that the handlers read or write."""

    #: In the order they were numbered.
    documents: dict[DocumentKey, DocumentRow] = field(default_factory=dict)
    sequences: dict[tuple[str, str, int], int] = field(default_factory=dict)
    #: In the order they were received.
    refunds: dict[tuple[str, str, str], RefundRow] = field(default_factory=dict)
    holds: dict[OrderKey, HoldRow] = field(default_factory=dict)
    commands: dict[str, CommandRow] = field(default_factory=dict)
    outbox: list[OutboxMessage] = field(default_factory=list)


def _order(ref: OrderRef) -> OrderKey:
    return (ref.marketplace, ref.marketplace_order_id)


class MemoryInvoices:
    def __init__(self, data: NotifierData, clock: Clock) -> None:
        self._data = data
        self._clock = clock

    async def claim(self, key: DocumentKey, worker: str, lease: timedelta) -> StoredInvoice | None:
        row = self._data.documents.get(key)
        now = self._clock()
        if row is None or row.stored.email_status in SETTLED_EMAIL_STATUSES:
            return None
        if row.claimed_until is not None and row.claimed_until >= now:
            return None
        row.claimed_by, row.claimed_until = worker, now + lease
        return row.stored

    async def release(self, key: DocumentKey, worker: str) -> None:
        row = self._data.documents.get(key)
        if row is not None and row.claimed_by == worker:
            row.claimed_by = row.claimed_until = None

    async def get(self, key: DocumentKey, *, for_update: bool = False) -> StoredInvoice | None:
        row = self._data.documents.get(key)
        return None if row is None else row.stored

    async def credit_notes_of(self, ref: OrderRef) -> list[StoredInvoice]:
        notes = [
            row
            for key, row in self._data.documents.items()
            if (key.marketplace, key.marketplace_order_id) == _order(ref)
            and key.kind is DocumentKind.CREDIT_NOTE
        ]
        return [row.stored for row in sorted(notes, key=lambda row: row.sequence)]

    async def next_sequence(self, seller: str, series: DocumentKind, year: int) -> int:
        series_key = (seller, series.value, year)
        self._data.sequences[series_key] = self._data.sequences.get(series_key, 0) + 1
        return self._data.sequences[series_key]

    async def add(self, new: NewDocument) -> None:
        if new.key in self._data.documents:
            raise DocumentExistsError(f"{new.key} is numbered already")
        until = self._clock() + new.lease
        self._data.documents[new.key] = DocumentRow(
            new.stored(), new.sequence, new.source, new.claimed_by, until
        )

    async def source(self, key: DocumentKey) -> dict[str, Any] | None:
        row = self._data.documents.get(key)
        return None if row is None else row.source

    async def request_email(self, key: DocumentKey) -> bool:
        row = self._data.documents.get(key)
        if row is None or row.stored.email_status != "archived":
            return False
        row.stored = replace(row.stored, email_status="pending")
        return True

    async def record_resend(self, key: DocumentKey) -> None:
        self._data.documents[key].resends += 1

    async def pdf(self, key: DocumentKey) -> bytes | None:
        row = self._data.documents.get(key)
        return None if row is None else row.pdf

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
        row = self._data.documents.get(key)
        if row is None:
            return
        sending = status == "sending"
        row.stored = replace(
            row.stored,
            email_status=status,
            attempts=row.stored.attempts + (1 if sending else 0),
            doubtful=row.stored.doubtful if doubtful is None else doubtful,
            resend_after=resend_after,
        )
        row.last_error = error
        row.pdf = row.pdf if row.pdf is not None else pdf
        if status == "sent":
            row.sent_at = self._clock()
        if not sending:
            row.claimed_by = row.claimed_until = None


class MemoryRefunds:
    def __init__(self, data: NotifierData) -> None:
        self._data = data

    async def add(self, ref: OrderRef, refund_key: str, refund: dict[str, Any]) -> None:
        self._data.refunds.setdefault(
            (*_order(ref), refund_key), RefundRow(StoredRefund(refund_key, refund))
        )

    async def waiting(self, ref: OrderRef | None = None) -> list[StoredRefund]:
        return [
            row.stored
            for (marketplace, order_id, _), row in self._data.refunds.items()
            if not row.settled and (ref is None or (marketplace, order_id) == _order(ref))
        ]

    async def settle(
        self, ref: OrderRef, refund_key: str, outcome: str, reason: str | None = None
    ) -> None:
        row = self._data.refunds.get((*_order(ref), refund_key))
        if row is not None:
            row.outcome, row.reason, row.settled = outcome, reason, outcome != "held"


class MemoryHolds:
    def __init__(self, data: NotifierData, clock: Clock) -> None:
        self._data = data
        self._clock = clock

    async def hold(self, ref: OrderRef, reason: str, shipment: dict[str, Any]) -> bool:
        previous = self._data.holds.get(_order(ref))
        current = None if previous is None or previous.released else previous.stored
        held_at = self._clock() if current is None else current.held_at
        self._data.holds[_order(ref)] = HoldRow(StoredHold(reason, shipment, held_at))
        return current is None or current.reason != reason

    async def release(self, ref: OrderRef) -> None:
        row = self._data.holds.get(_order(ref))
        if row is not None:
            row.released = True

    async def get(self, ref: OrderRef) -> StoredHold | None:
        row = self._data.holds.get(_order(ref))
        return None if row is None or row.released else row.stored

    async def held(self) -> list[StoredHold]:
        rows = [row.stored for row in self._data.holds.values() if not row.released]
        return sorted(rows, key=lambda hold: hold.held_at)

    async def count(self) -> int:
        return len(await self.held())


class MemoryNotifierCommands:
    def __init__(self, data: NotifierData) -> None:
        self._data = data

    async def get(self, command_id: str) -> StoredCommand | None:
        row = self._data.commands.get(command_id)
        return None if row is None else row.stored

    async def start(
        self, command_id: str, command_type: str, ref: OrderRef, request_digest: str
    ) -> bool:
        if command_id in self._data.commands:
            return False
        stored = StoredCommand(command_id, request_digest, "running", None)
        self._data.commands[command_id] = CommandRow(stored, command_type, _order(ref))
        return True

    async def finish(
        self, command_id: str, outcome: str, reason: str | None, answer: dict[str, Any]
    ) -> None:
        row = self._data.commands.get(command_id)
        if row is not None:
            row.stored = replace(row.stored, outcome=outcome, answer=answer)
            row.reason = reason

    async def forget(self, command_id: str) -> None:
        row = self._data.commands.get(command_id)
        if row is not None and row.stored.outcome == "running":
            del self._data.commands[command_id]


class MemoryNotifierWork(MemoryTransaction[NotifierData]):
    """One transaction over :class:`NotifierData`."""

    invoices: MemoryInvoices
    holds: MemoryHolds
    refunds: MemoryRefunds
    commands: MemoryNotifierCommands

    def __init__(self, data: NotifierData, clock: Clock) -> None:
        super().__init__(data)
        self._clock = clock

    def bind(self, data: NotifierData) -> None:
        self.invoices = MemoryInvoices(data, self._clock)
        self.holds = MemoryHolds(data, self._clock)
        self.refunds = MemoryRefunds(data)
        self.commands = MemoryNotifierCommands(data)


class MemoryNotifierSession:
    def __init__(self, data: NotifierData, clock: Clock) -> None:
        self._data = data
        self._clock = clock
        self.invoices = MemoryInvoices(data, clock)
        self.holds = MemoryHolds(data, clock)
        self.refunds = MemoryRefunds(data)

    def work(self) -> MemoryNotifierWork:
        return MemoryNotifierWork(self._data, self._clock)


class MemoryNotifierStore:
    def __init__(self, data: NotifierData, clock: Clock = lambda: datetime.now(UTC)) -> None:
        self.data = data
        self._clock = clock

    @asynccontextmanager
    async def session(self) -> AsyncIterator[MemoryNotifierSession]:
        yield MemoryNotifierSession(self.data, self._clock)

    def work(self) -> MemoryNotifierWork:
        return MemoryNotifierWork(self.data, self._clock)


#: mypy holds the in-memory store to the protocol the handlers take.
_STORE: Callable[[NotifierData], NotifierStore] = MemoryNotifierStore

"""The poller's stores in memory: what ``repository.py`` keeps in PostgreSQL for the polls,
the actions and the orders to mark imported, for the unit tests of the polls, the gateway
and the import marker, which then need no server.

One suite of store tests each (``tests/poll_store.py``, ``tests/action_store.py``,
``tests/import_store.py``) runs against both, so the two behave alike where the handlers can
tell. The source's and the command's locks are played in memory as well (one process, one
event loop); the advisory locks' release when a worker dies is proven by the fault tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from services.poller.action_protocol import FINAL_STATES
from services.poller.repository import (
    ActionPart,
    ActionStore,
    Imports,
    PendingImport,
    Polls,
    StoredAction,
)
from services.poller.sync import PollReport, utc_now
from shared.contracts import SETTLED_LENGOW_STATUSES, OrderActionRequested, OrderSnapshot
from shared.outbox import OutboxMessage
from shared.unit_of_work import MemoryTransaction

Clock = Callable[[], datetime]


@dataclass
class ActionRow:
    stored: StoredAction
    parts: list[ActionPart]
    errors: list[str] = field(default_factory=list)
    updated_at: datetime | None = None


@dataclass
class ImportRow:
    merchant_order_id: str
    requested_at: datetime
    state: str = "pending"
    attempts: int = 0
    last_error: str | None = None
    claimed_until: datetime | None = None


@dataclass
class FingerprintRow:
    """What was last published of an order, and where it was read."""

    fingerprint: str
    source: str
    lengow_status: str
    published_at: datetime


@dataclass
class QuarantineRow:
    source: str
    kind: str
    reason: str
    raw: dict[str, Any]
    held_from: datetime
    first_seen: datetime
    polls: int = 1


@dataclass
class PollerData:
    """Everything the poller's schema holds that the polls, the gateway and the import marker
    read or write."""

    fingerprints: dict[tuple[str, str], FingerprintRow] = field(default_factory=dict)
    watermarks: dict[str, datetime] = field(default_factory=dict)
    quarantine: dict[tuple[str, str], QuarantineRow] = field(default_factory=dict)
    catchups: set[tuple[str, date]] = field(default_factory=set)
    #: (source, marketplace, order id, kind, Lengow status) of what the catch-ups found.
    catchup_finds: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    runs: list[PollReport] = field(default_factory=list)
    actions: dict[str, ActionRow] = field(default_factory=dict)
    imports: dict[tuple[str, str], ImportRow] = field(default_factory=dict)
    outbox: list[OutboxMessage] = field(default_factory=list)
    #: The sources being polled and the commands being sent (the sessions' locks).
    polling: set[str] = field(default_factory=set)
    locked: set[str] = field(default_factory=set)

    def source_of(self, marketplace: str, order_id: str) -> str | None:
        """The Lengow source the order was read from, if a poll read it."""
        row = self.fingerprints.get((marketplace, order_id))
        return None if row is None else row.source


@asynccontextmanager
async def _taken(held: set[str], name: str) -> AsyncIterator[bool]:
    """Whether ``name`` was free and is now held by this block, as an advisory lock would be
    (one process, one event loop: a set is enough)."""
    if name in held:
        yield False
        return
    held.add(name)
    try:
        yield True
    finally:
        held.discard(name)


class MemoryActions:
    def __init__(self, data: PollerData, clock: Clock) -> None:
        self._data = data
        self._clock = clock

    async def get(self, command_id: str) -> StoredAction | None:
        row = self._data.actions.get(command_id)
        return None if row is None else row.stored

    async def add(
        self,
        requested: OrderActionRequested,
        source: str,
        correlation_id: str | None,
        parts: list[dict[str, Any]],
    ) -> StoredAction:
        if requested.command_id in self._data.actions:
            raise ValueError(f"action of {requested.command_id} is recorded already")
        now = self._clock()
        stored = StoredAction(
            command_id=requested.command_id,
            source=source,
            marketplace=requested.marketplace,
            marketplace_order_id=requested.marketplace_order_id,
            action_type=requested.action_type,
            arguments=dict(requested.arguments),
            state="open",
            correlation_id=correlation_id,
            created_at=now,
        )
        rows = [
            ActionPart(
                command_id=requested.command_id,
                part=index,
                line=arguments.get("line"),
                arguments=arguments,
                state="new",
                lengow_action_id=None,
                errors=[],
                attempts=0,
                created_at=now,
                sent_at=None,
            )
            for index, arguments in enumerate(parts)
        ]
        self._data.actions[requested.command_id] = ActionRow(stored, rows, updated_at=now)
        return stored

    async def parts(self, command_id: str) -> list[ActionPart]:
        row = self._data.actions.get(command_id)
        return [] if row is None else list(row.parts)

    def _update(self, part: ActionPart, **changes: Any) -> None:
        parts = self._data.actions[part.command_id].parts
        parts[part.part] = replace(parts[part.part], **changes)

    def _current(self, part: ActionPart) -> ActionPart:
        return self._data.actions[part.command_id].parts[part.part]

    async def start_sending(self, part: ActionPart) -> None:
        self._update(part, state="sending", attempts=self._current(part).attempts + 1)

    async def not_sent(self, part: ActionPart) -> None:
        if self._current(part).state == "sending":
            self._update(part, state="new")

    async def mark_sent(self, part: ActionPart, lengow_action_id: str) -> None:
        self._update(part, state="sent", lengow_action_id=lengow_action_id, sent_at=self._clock())

    async def settle_part(self, part: ActionPart, state: str, errors: list[str]) -> bool:
        if self._current(part).state in FINAL_STATES:
            return False
        self._update(part, state=state, errors=list(errors))
        return True

    async def finish(self, command_id: str, state: str, errors: list[str]) -> bool:
        row = self._data.actions.get(command_id)
        if row is None or row.stored.state != "open":
            return False
        row.stored = replace(row.stored, state=state)
        row.errors, row.updated_at = list(errors), self._clock()
        return True

    async def open_actions(self, limit: int) -> list[tuple[StoredAction, list[ActionPart]]]:
        rows = [row for row in self._data.actions.values() if row.stored.state == "open"]
        rows.sort(key=lambda row: row.updated_at or row.stored.created_at)
        now = self._clock()
        found = rows[:limit]
        for row in found:
            row.updated_at = now
        return [(row.stored, list(row.parts)) for row in found]

    async def known_lengow_ids(self, ids: list[str]) -> set[str]:
        held = {
            part.lengow_action_id
            for row in self._data.actions.values()
            for part in row.parts
            if part.lengow_action_id is not None
        }
        return held & set(ids)


class MemoryImports:
    def __init__(self, data: PollerData, clock: Clock = utc_now) -> None:
        self._data = data
        self._clock = clock

    async def link(self, marketplace: str, order_id: str, merchant_order_id: str) -> bool:
        row = self._data.imports.get((marketplace, order_id))
        if row is not None and row.merchant_order_id == merchant_order_id:
            return False
        requested = self._clock() if row is None else row.requested_at
        self._data.imports[(marketplace, order_id)] = ImportRow(merchant_order_id, requested)
        return True

    async def request_many(self, rows: list[tuple[str, str, str]]) -> int:
        added = 0
        for marketplace, order_id, ours in rows:
            if (marketplace, order_id) not in self._data.imports:
                self._data.imports[(marketplace, order_id)] = ImportRow(ours, self._clock())
                added += 1
        return added

    async def claim(self, limit: int, lease_seconds: float) -> list[PendingImport]:
        now = self._clock()
        due = [
            (key, row)
            for key, row in self._data.imports.items()
            if row.state == "pending" and (row.claimed_until is None or row.claimed_until < now)
        ]
        due.sort(key=lambda item: item[1].requested_at)
        claimed = []
        for (marketplace, order_id), row in due[:limit]:
            row.claimed_until = now + timedelta(seconds=lease_seconds)
            source = self._data.source_of(marketplace, order_id)
            claimed.append(
                PendingImport(marketplace, order_id, row.merchant_order_id, row.attempts, source)
            )
        return claimed

    def _row(self, pending: PendingImport) -> ImportRow | None:
        row = self._data.imports.get((pending.marketplace, pending.marketplace_order_id))
        return (
            row if row is not None and row.merchant_order_id == pending.merchant_order_id else None
        )

    async def done(self, pending: PendingImport) -> None:
        if (row := self._row(pending)) is not None:
            row.state, row.attempts, row.last_error = "done", row.attempts + 1, None

    async def attempt_failed(
        self, pending: PendingImport, error: str, give_up: bool, retry_in: float
    ) -> None:
        if (row := self._row(pending)) is not None:
            row.attempts, row.last_error = row.attempts + 1, error
            row.state = "failed" if give_up else row.state
            row.claimed_until = self._clock() + timedelta(seconds=retry_in)


class MemoryPolls:
    def __init__(self, data: PollerData, clock: Clock = utc_now) -> None:
        self._data = data
        self._clock = clock

    @asynccontextmanager
    async def source_lock(self, source: str) -> AsyncIterator[MemoryPolls | None]:
        async with _taken(self._data.polling, source) as mine:
            yield self if mine else None

    async def watermark(self, source: str) -> datetime | None:
        return self._data.watermarks.get(source)

    async def advance_watermark(self, source: str, updated_to: datetime) -> None:
        current = self._data.watermarks.get(source)
        self._data.watermarks[source] = updated_to if current is None else max(current, updated_to)

    async def fingerprints(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        rows = self._data.fingerprints
        return {key: rows[key].fingerprint for key in keys if key in rows}

    async def save_fingerprints(self, source: str, rows: list[tuple[str, str, str, str]]) -> None:
        now = self._clock()
        for marketplace, order_id, digest, status in rows:
            self._data.fingerprints[(marketplace, order_id)] = FingerprintRow(
                digest, source, status, now
            )

    async def open_orders(
        self, source: str, published_before: datetime, limit: int
    ) -> list[tuple[str, str, str]]:
        settled = {status.value for status in SETTLED_LENGOW_STATUSES}
        rows = [
            (row.published_at, key, row.lengow_status)
            for key, row in self._data.fingerprints.items()
            if row.source == source
            and row.published_at < published_before
            and row.lengow_status not in settled
        ]
        rows.sort(key=lambda found: found[0])
        return [(key[0], key[1], status) for _, key, status in rows[:limit]]

    async def note_catchup_finds(
        self,
        source: str,
        found: Sequence[tuple[OrderSnapshot, str]],
        known: Mapping[tuple[str, str], str],
        kind: str | None = None,
    ) -> None:
        for snapshot, _ in found:
            key = (snapshot.marketplace, snapshot.marketplace_order_id)
            what = kind or ("changed" if key in known else "new")
            self._data.catchup_finds.append((source, *key, what, snapshot.lengow_status.value))

    async def quarantine(
        self, source: str, rows: list[tuple[str, str, str, str, dict[str, Any], datetime]]
    ) -> None:
        now = self._clock()
        for marketplace, order_id, kind, reason, raw, held_from in rows:
            key = (marketplace, order_id)
            before = self._data.quarantine.get(key)
            if before is None:
                self._data.quarantine[key] = QuarantineRow(
                    source, kind, reason, raw, held_from, now
                )
                continue
            before.kind, before.reason, before.raw, before.source = kind, reason, raw, source
            before.polls += 1
            before.held_from = min(before.held_from, held_from)

    async def release(self, keys: list[tuple[str, str]]) -> list[tuple[str, str]]:
        return [key for key in keys if self._data.quarantine.pop(key, None) is not None]

    async def quarantine_hold(self, source: str, since: datetime) -> datetime | None:
        held = [
            row.held_from
            for row in self._data.quarantine.values()
            if row.source == source and row.first_seen > since
        ]
        return min(held, default=None)

    async def quarantined(self, source: str) -> int:
        return sum(1 for row in self._data.quarantine.values() if row.source == source)

    async def last_catchup(self, source: str) -> date | None:
        return max((day for name, day in self._data.catchups if name == source), default=None)

    async def record_catchup(self, source: str, day: date) -> None:
        self._data.catchups.add((source, day))

    async def record_run(self, report: PollReport) -> None:
        self._data.runs.append(report)


class MemoryGatewayWork(MemoryTransaction[PollerData]):
    """One transaction over :class:`PollerData`."""

    actions: MemoryActions
    #: The locks are the session's, not the transaction's.
    session_fields = ("locked", "polling")

    def __init__(self, data: PollerData, clock: Clock) -> None:
        super().__init__(data)
        self._clock = clock

    def bind(self, data: PollerData) -> None:
        self.actions = MemoryActions(data, self._clock)


class MemoryActionSession:
    def __init__(self, data: PollerData, clock: Clock) -> None:
        self._data = data
        self._clock = clock
        self.actions = MemoryActions(data, clock)

    async def source_of(self, marketplace: str, order_id: str) -> str | None:
        return self._data.source_of(marketplace, order_id)

    def work(self) -> MemoryGatewayWork:
        return MemoryGatewayWork(self._data, self._clock)


class MemoryActionStore:
    def __init__(self, data: PollerData, clock: Clock = utc_now) -> None:
        self.data = data
        self._clock = clock

    @asynccontextmanager
    async def session(self) -> AsyncIterator[MemoryActionSession]:
        yield MemoryActionSession(self.data, self._clock)

    @asynccontextmanager
    async def locked(self, command_id: str) -> AsyncIterator[MemoryActionSession | None]:
        async with _taken(self.data.locked, command_id) as mine:
            yield MemoryActionSession(self.data, self._clock) if mine else None


#: mypy holds the in-memory stores to the protocols the handlers take.
_STORE: Callable[[PollerData], ActionStore] = MemoryActionStore
_IMPORTS: Callable[[PollerData], Imports] = MemoryImports
_POLLS: Callable[[PollerData], Polls] = MemoryPolls

"""PostgreSQL adapter of the poller: watermarks, fingerprints, catch-ups, poll runs, locks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg

from shared.contracts import SETTLED_LENGOW_STATUSES, OrderActionRequested, OrderSnapshot
from shared.database import Connection, session_lock
from shared.retention import RetentionRule
from shared.unit_of_work import UnitOfWork, Work

if TYPE_CHECKING:
    from services.poller.sync import PollReport

OrderKey = tuple[str, str]


class Polls(Protocol):
    """What the polls keep: each source's watermark and catch-ups, what was published of
    each order (its fingerprint), the orders in quarantine, and a record of every run."""

    def source_lock(self, source: str) -> AbstractAsyncContextManager[Polls | None]:
        """The store bound to a session that alone polls ``source`` while it lasts; None
        when another replica is polling it."""
        ...

    async def watermark(self, source: str) -> datetime | None: ...

    async def advance_watermark(self, source: str, updated_to: datetime) -> None:
        """Never backwards."""
        ...

    async def fingerprints(self, keys: list[OrderKey]) -> dict[OrderKey, str]: ...

    async def save_fingerprints(
        self, source: str, rows: list[tuple[str, str, str, str]]
    ) -> None: ...

    async def open_orders(
        self, source: str, published_before: datetime, limit: int
    ) -> list[tuple[str, str, str]]: ...

    async def note_catchup_finds(
        self,
        source: str,
        found: Sequence[tuple[OrderSnapshot, str]],
        known: Mapping[OrderKey, str],
        kind: str | None = None,
    ) -> None: ...

    async def quarantine(
        self, source: str, rows: list[tuple[str, str, str, str, dict[str, Any], datetime]]
    ) -> None: ...

    async def release(self, keys: list[OrderKey]) -> list[OrderKey]: ...

    async def quarantine_hold(self, source: str, since: datetime) -> datetime | None: ...

    async def quarantined(self, source: str) -> int: ...

    async def last_catchup(self, source: str) -> date | None: ...

    async def record_catchup(self, source: str, day: date) -> None: ...

    async def record_run(self, report: PollReport) -> None: ...


class PollerRepository:
    """The polls' store on PostgreSQL: on the pool, or on one connection already held (a poll
    holds its source's lock on one connection and does all its work on it: nothing waits for
    a second connection while holding one)."""

    def __init__(self, db: asyncpg.Pool | Connection) -> None:
        self._pool = db

    @asynccontextmanager
    async def source_lock(self, source: str) -> AsyncIterator[PollerRepository | None]:
        """Yields the repository bound to the lock's connection when this replica may poll
        ``source`` now, None when another one is polling it."""
        if not isinstance(self._pool, asyncpg.Pool):
            raise RuntimeError("source_lock takes its own connection from the pool")
        async with (
            self._pool.acquire() as conn,
            session_lock(conn, f"lengow-orders:poll:{source}") as locked,
        ):
            yield PollerRepository(conn) if locked else None

    async def watermark(self, source: str) -> datetime | None:
        value: datetime | None = await self._pool.fetchval(
            "SELECT updated_to FROM watermarks WHERE source = $1", source
        )
        return value

    async def advance_watermark(self, source: str, updated_to: datetime) -> None:
        await self._pool.execute(
            "INSERT INTO watermarks (source, updated_to, succeeded_at) VALUES ($1, $2, now())"
            " ON CONFLICT (source) DO UPDATE SET"
            " updated_to = GREATEST(watermarks.updated_to, excluded.updated_to),"
            " succeeded_at = now()",
            source,
            updated_to,
        )

    async def fingerprints(self, keys: list[OrderKey]) -> dict[OrderKey, str]:
        marketplaces, ids = zip(*keys, strict=True) if keys else ((), ())
        rows = await self._pool.fetch(
            "SELECT f.marketplace, f.marketplace_order_id, f.fingerprint FROM fingerprints f"
            " JOIN unnest($1::text[], $2::text[]) AS k(marketplace, marketplace_order_id)"
            " USING (marketplace, marketplace_order_id)",
            list(marketplaces),
            list(ids),
        )
        return {(r["marketplace"], r["marketplace_order_id"]): r["fingerprint"] for r in rows}

    async def save_fingerprints(self, source: str, rows: list[tuple[str, str, str, str]]) -> None:
        """(marketplace, order id, fingerprint, Lengow status) of each order published."""
        if not rows:
            return
        marketplaces, ids, digests, statuses = (list(column) for column in zip(*rows, strict=True))
        await self._pool.execute(
            "INSERT INTO fingerprints (marketplace, marketplace_order_id, fingerprint, source,"
            " lengow_status) SELECT m, i, f, $4, s FROM unnest($1::text[], $2::text[],"
            " $3::text[], $5::text[]) AS r(m, i, f, s)"
            " ON CONFLICT (marketplace, marketplace_order_id) DO UPDATE SET"
            " fingerprint = excluded.fingerprint, source = excluded.source,"
            " lengow_status = excluded.lengow_status, published_at = now()",
            marketplaces,
            ids,
            digests,
            source,
            statuses,
        )

    async def open_orders(
        self, source: str, published_before: datetime, limit: int
    ) -> list[tuple[str, str, str]]:
        """(marketplace, order id, status last published) of the source's orders not in a
        final status and not published since ``published_before``, the oldest first."""
        rows = await self._pool.fetch(
            "SELECT marketplace, marketplace_order_id, lengow_status FROM fingerprints"
            " WHERE source = $1 AND published_at < $2 AND lengow_status IS NOT NULL"
            " AND lengow_status <> ALL($4::text[]) ORDER BY published_at LIMIT $3",
            source,
            published_before,
            limit,
            sorted(status.value for status in SETTLED_LENGOW_STATUSES),
        )
        return [(r["marketplace"], r["marketplace_order_id"], r["lengow_status"]) for r in rows]

    async def note_catchup_finds(
        self,
        source: str,
        found: Sequence[tuple[OrderSnapshot, str]],
        known: Mapping[OrderKey, str],
        kind: str | None = None,
    ) -> None:
        """What the polls missed (new or changed), or, with ``kind``, what the re-read of
        open orders found (drifted)."""
        if not found:
            return
        rows = [
            (
                snapshot.marketplace,
                snapshot.marketplace_order_id,
                kind
                or (
                    "changed"
                    if (snapshot.marketplace, snapshot.marketplace_order_id) in known
                    else "new"
                ),
                snapshot.lengow_status.value,
            )
            for snapshot, _ in found
        ]
        await self._pool.executemany(
            "INSERT INTO catchup_finds (source, marketplace, marketplace_order_id, kind,"
            " lengow_status) VALUES ($1, $2, $3, $4, $5)",
            [(source, *row) for row in rows],
        )

    async def source_of(self, marketplace: str, order_id: str) -> str | None:
        value: str | None = await self._pool.fetchval(
            "SELECT source FROM fingerprints WHERE marketplace = $1 AND marketplace_order_id = $2",
            marketplace,
            order_id,
        )
        return value

    async def quarantine(
        self, source: str, rows: list[tuple[str, str, str, str, dict[str, Any], datetime]]
    ) -> None:
        """Orders that could not be read or handled: ``(marketplace, order id, kind, reason,
        raw, held_from)``."""
        if not rows:
            return
        await self._pool.executemany(
            "INSERT INTO quarantined_orders (marketplace, marketplace_order_id, kind, reason,"
            " raw, held_from, source) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (marketplace, marketplace_order_id) DO UPDATE SET"
            " kind = excluded.kind, reason = excluded.reason, raw = excluded.raw,"
            " last_seen = now(),"
            " polls = quarantined_orders.polls + 1,"
            " held_from = LEAST(quarantined_orders.held_from, excluded.held_from)",
            [(*row, source) for row in rows],
        )

    async def release(self, keys: list[OrderKey]) -> list[OrderKey]:
        """Orders that read now: out of quarantine. Returns those that were in it."""
        if not keys:
            return []
        marketplaces, ids = zip(*keys, strict=True)
        rows = await self._pool.fetch(
            "DELETE FROM quarantined_orders q USING unnest($1::text[], $2::text[]) AS k(m, i)"
            " WHERE q.marketplace = k.m AND q.marketplace_order_id = k.i"
            " RETURNING q.marketplace, q.marketplace_order_id",
            list(marketplaces),
            list(ids),
        )
        return [(r["marketplace"], r["marketplace_order_id"]) for r in rows]

    async def quarantine_hold(self, source: str, since: datetime) -> datetime | None:
        """How far back the source's quarantined orders hold its watermark (those first seen
        after ``since``: older ones no catch-up reaches any more, and stop holding)."""
        value: datetime | None = await self._pool.fetchval(
            "SELECT min(held_from) FROM quarantined_orders WHERE source = $1 AND first_seen > $2",
            source,
            since,
        )
        return value

    async def quarantined(self, source: str) -> int:
        count: int = await self._pool.fetchval(
            "SELECT count(*) FROM quarantined_orders WHERE source = $1", source
        )
        return count

    async def last_catchup(self, source: str) -> date | None:
        value: date | None = await self._pool.fetchval(
            "SELECT max(day) FROM catchups WHERE source = $1", source
        )
        return value

    async def record_catchup(self, source: str, day: date) -> None:
        await self._pool.execute(
            "INSERT INTO catchups (source, day) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            source,
            day,
        )

    async def record_run(self, report: PollReport) -> None:
        await self._pool.execute(
            "INSERT INTO poll_runs (source, kind, window_from, window_to, started_at,"
            " finished_at, fetched, published, unchanged, malformed, filtered, error,"
            " unknown_status, republished)"
            " VALUES ($1, $2, $3, $4, $5, now(), $6, $7, $8, $9, $10, $11, $12, $13)",
            report.source,
            report.kind,
            report.window.updated_from,
            report.window.updated_to,
            report.started_at,
            report.fetched,
            report.published,
            report.unchanged,
            report.malformed,
            report.filtered,
            report.error,
            report.unknown_status,
            report.republished,
        )


@dataclass(frozen=True)
class StoredAction:
    """A command's marketplace action, as the gateway recorded it."""

    command_id: str
    source: str
    marketplace: str
    marketplace_order_id: str
    action_type: str
    arguments: dict[str, Any]
    state: str
    correlation_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class ActionPart:
    """One Lengow action of a command (one per line for line-level actions)."""

    command_id: str
    part: int
    line: str | None
    arguments: dict[str, Any]
    state: str
    lengow_action_id: str | None
    errors: list[str]
    attempts: int
    created_at: datetime
    sent_at: datetime | None


def _action(row: asyncpg.Record) -> StoredAction:
    return StoredAction(**{field.name: row[field.name] for field in fields(StoredAction)})


def _part(row: asyncpg.Record) -> ActionPart:
    columns = {field.name: row[field.name] for field in fields(ActionPart)}
    return ActionPart(**{**columns, "errors": list(row["errors"] or [])})


class ActionRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def get(self, command_id: str) -> StoredAction | None:
        row = await self._conn.fetchrow("SELECT * FROM actions WHERE command_id = $1", command_id)
        return None if row is None else _action(row)

    async def add(
        self,
        requested: OrderActionRequested,
        source: str,
        correlation_id: str | None,
        parts: list[dict[str, Any]],
    ) -> StoredAction:
        async with self._conn.transaction():
            row = await self._conn.fetchrow(
                "INSERT INTO actions (command_id, source, marketplace, marketplace_order_id,"
                " action_type, arguments, state, correlation_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, 'open', $7) RETURNING *",
                requested.command_id,
                source,
                requested.marketplace,
                requested.marketplace_order_id,
                requested.action_type,
                requested.arguments,
                correlation_id,
            )
            await self._conn.executemany(
                "INSERT INTO action_parts (command_id, part, line, arguments)"
                " VALUES ($1, $2, $3, $4)",
                [
                    (requested.command_id, index, arguments.get("line"), arguments)
                    for index, arguments in enumerate(parts)
                ],
            )
        if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
            raise RuntimeError("the action was not recorded")
        return _action(row)

    async def parts(self, command_id: str) -> list[ActionPart]:
        rows = await self._conn.fetch(
            "SELECT * FROM action_parts WHERE command_id = $1 ORDER BY part", command_id
        )
        return [_part(row) for row in rows]

    async def start_sending(self, part: ActionPart) -> None:
        """Recorded before the POST leaves: from now on the part is in doubt until Lengow's
        id or verdict is known."""
        await self._conn.execute(
            "UPDATE action_parts SET state = 'sending', attempts = attempts + 1,"
            " updated_at = now() WHERE command_id = $1 AND part = $2",
            part.command_id,
            part.part,
        )

    async def not_sent(self, part: ActionPart) -> None:
        """The POST certainly did not reach Lengow: it may be sent later without a look."""
        await self._conn.execute(
            "UPDATE action_parts SET state = 'new', updated_at = now()"
            " WHERE command_id = $1 AND part = $2 AND state = 'sending'",
            part.command_id,
            part.part,
        )

    async def mark_sent(self, part: ActionPart, lengow_action_id: str) -> None:
        await self._conn.execute(
            "UPDATE action_parts SET state = 'sent', lengow_action_id = $3, sent_at = now(),"
            " updated_at = now() WHERE command_id = $1 AND part = $2",
            part.command_id,
            part.part,
            lengow_action_id,
        )

    async def settle_part(self, part: ActionPart, state: str, errors: list[str]) -> bool:
        """The part's verdict; False when another worker settled it first."""
        done: str | None = await self._conn.fetchval(
            "UPDATE action_parts SET state = $3, errors = $4, updated_at = now()"
            " WHERE command_id = $1 AND part = $2 AND state NOT IN ('succeeded', 'failed')"
            " RETURNING state",
            part.command_id,
            part.part,
            state,
            errors,
        )
        return done is not None

    async def finish(self, command_id: str, state: str, errors: list[str]) -> bool:
        """The command's verdict, once: False when it was already given."""
        done: str | None = await self._conn.fetchval(
            "UPDATE actions SET state = $2, errors = $3, updated_at = now()"
            " WHERE command_id = $1 AND state = 'open' RETURNING state",
            command_id,
            state,
            errors,
        )
        return done is not None

    async def open_actions(self, limit: int) -> list[tuple[StoredAction, list[ActionPart]]]:
        """Open commands and their parts, least recently looked at first."""
        rows = await self._conn.fetch(
            "SELECT * FROM actions WHERE state = 'open' ORDER BY updated_at LIMIT $1", limit
        )
        found = [_action(row) for row in rows]
        parts = await self._conn.fetch(
            "SELECT * FROM action_parts WHERE command_id = ANY($1::text[]) ORDER BY part",
            [action.command_id for action in found],
        )
        by_command: dict[str, list[ActionPart]] = {}
        for row in parts:
            by_command.setdefault(row["command_id"], []).append(_part(row))
        await self._conn.execute(
            "UPDATE actions SET updated_at = now() WHERE command_id = ANY($1::text[])",
            [action.command_id for action in found],
        )
        return [(action, by_command.get(action.command_id, [])) for action in found]

    async def known_lengow_ids(self, ids: list[str]) -> set[str]:
        rows = await self._conn.fetch(
            "SELECT lengow_action_id FROM action_parts WHERE lengow_action_id = ANY($1::text[])",
            ids,
        )
        return {row["lengow_action_id"] for row in rows}


class GatewayUnitOfWork(UnitOfWork):
    actions: ActionRepository

    def bind(self, conn: Connection) -> None:
        self.actions = ActionRepository(conn)


class Actions(Protocol):
    """The commands' marketplace actions and their parts, as the gateway keeps them."""

    async def get(self, command_id: str) -> StoredAction | None: ...

    async def add(
        self,
        requested: OrderActionRequested,
        source: str,
        correlation_id: str | None,
        parts: list[dict[str, Any]],
    ) -> StoredAction:
        """The action and its parts, together."""
        ...

    async def parts(self, command_id: str) -> list[ActionPart]: ...

    async def start_sending(self, part: ActionPart) -> None: ...

    async def not_sent(self, part: ActionPart) -> None: ...

    async def mark_sent(self, part: ActionPart, lengow_action_id: str) -> None: ...

    async def settle_part(self, part: ActionPart, state: str, errors: list[str]) -> bool: ...

    async def finish(self, command_id: str, state: str, errors: list[str]) -> bool: ...

    async def open_actions(self, limit: int) -> list[tuple[StoredAction, list[ActionPart]]]: ...

    async def known_lengow_ids(self, ids: list[str]) -> set[str]: ...


class GatewayWork(Work, Protocol):
    """One transaction over the actions and the outbox."""

    @property
    def actions(self) -> Actions: ...


class ActionSession(Protocol):
    """The store as the gateway holds it while it works on one command: each read and write
    of ``actions`` stands on its own; ``work`` is a transaction in the same session."""

    @property
    def actions(self) -> Actions: ...

    async def source_of(self, marketplace: str, order_id: str) -> str | None:
        """The Lengow source the poller read the order from, if it did."""
        ...

    def work(self) -> GatewayWork: ...


class ActionStore(Protocol):
    """Where the gateway keeps the actions: PostgreSQL in production, memory in the
    gateway's unit tests (``memory.py``)."""

    def session(self) -> AbstractAsyncContextManager[ActionSession]: ...

    def locked(self, command_id: str) -> AbstractAsyncContextManager[ActionSession | None]:
        """A session that alone works on ``command_id`` while it lasts (held across the calls
        to Lengow); None when another worker holds the command."""
        ...


class PostgresActionSession:
    def __init__(self, conn: Connection, pool: asyncpg.Pool, wake_relay: Callable[[], None]):
        self._conn = conn
        self._pool = pool
        self._wake_relay = wake_relay
        self.actions = ActionRepository(conn)

    async def source_of(self, marketplace: str, order_id: str) -> str | None:
        return await PollerRepository(self._conn).source_of(marketplace, order_id)

    def work(self) -> GatewayUnitOfWork:
        return GatewayUnitOfWork(self._pool, self._wake_relay, connection=self._conn)


class PostgresActionStore:
    """The command's lock is a session advisory lock: it spans the calls to Lengow, and a
    worker that dies releases it with its connection."""

    def __init__(self, pool: asyncpg.Pool, wake_relay: Callable[[], None]) -> None:
        self._pool = pool
        self._wake_relay = wake_relay

    @asynccontextmanager
    async def session(self) -> AsyncIterator[PostgresActionSession]:
        async with self._pool.acquire() as conn:
            yield PostgresActionSession(conn, self._pool, self._wake_relay)

    @asynccontextmanager
    async def locked(self, command_id: str) -> AsyncIterator[PostgresActionSession | None]:
        async with (
            self._pool.acquire() as conn,
            session_lock(conn, f"lengow-orders:action:{command_id}") as mine,
        ):
            yield PostgresActionSession(conn, self._pool, self._wake_relay) if mine else None


#: mypy holds the PostgreSQL store to the protocol the gateway takes.
_STORE: Callable[[asyncpg.Pool, Callable[[], None]], ActionStore] = PostgresActionStore


class MarketplaceDocuments:
    """Lengow's marketplaces document as last read, per source."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def digest(self, source: str) -> str | None:
        value: str | None = await self._conn.fetchval(
            "SELECT digest FROM marketplace_documents WHERE source = $1", source
        )
        return value

    async def save(
        self, source: str, marketplace: str, document: dict[str, Any], digest: str, at: datetime
    ) -> None:
        await self._conn.execute(
            "INSERT INTO marketplace_documents (source, marketplace, document, digest, fetched_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (source) DO UPDATE SET"
            " marketplace = excluded.marketplace, document = excluded.document,"
            " digest = excluded.digest, fetched_at = excluded.fetched_at",
            source,
            marketplace,
            document,
            digest,
            at,
        )


@dataclass(frozen=True)
class PendingImport:
    marketplace: str
    marketplace_order_id: str
    merchant_order_id: str
    attempts: int
    #: The Lengow source the order was read from, when the poller read it.
    source: str | None = None


class Imports(Protocol):
    """Orders to mark imported at Lengow, each claimed by one replica at a time."""

    async def link(self, marketplace: str, order_id: str, merchant_order_id: str) -> bool: ...

    async def request_many(self, rows: list[tuple[str, str, str]]) -> int: ...

    async def claim(self, limit: int, lease_seconds: float) -> list[PendingImport]: ...

    async def done(self, pending: PendingImport) -> None: ...

    async def attempt_failed(
        self, pending: PendingImport, error: str, give_up: bool, retry_in: float
    ) -> None: ...


class ImportRepository:
    """Orders to mark imported at Lengow (``PATCH /v3.0/orders/moi/``)."""

    def __init__(self, db: asyncpg.Pool | Connection) -> None:
        self._db = db

    async def link(self, marketplace: str, order_id: str, merchant_order_id: str) -> bool:
        """The id another service gives the order, to write back in place of ours. False
        when that id is already the one requested."""
        written: str | None = await self._db.fetchval(
            "INSERT INTO imports (marketplace, marketplace_order_id, merchant_order_id)"
            " VALUES ($1, $2, $3) ON CONFLICT (marketplace, marketplace_order_id) DO UPDATE SET"
            " merchant_order_id = excluded.merchant_order_id, state = 'pending', attempts = 0,"
            " last_error = NULL, claimed_until = NULL, updated_at = now()"
            " WHERE imports.merchant_order_id <> excluded.merchant_order_id RETURNING state",
            marketplace,
            order_id,
            merchant_order_id,
        )
        return written is not None

    async def request_many(self, rows: list[tuple[str, str, str]]) -> int:
        """Record our own ids for orders not requested yet; returns how many were new."""
        if not rows:
            return 0
        marketplaces, ids, merchant_ids = (list(column) for column in zip(*rows, strict=True))
        written: int = await self._db.fetchval(
            "WITH added AS (INSERT INTO imports (marketplace, marketplace_order_id,"
            " merchant_order_id) SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
            " ON CONFLICT (marketplace, marketplace_order_id) DO NOTHING RETURNING 1)"
            " SELECT count(*) FROM added",
            marketplaces,
            ids,
            merchant_ids,
        )
        return written

    async def claim(self, limit: int, lease_seconds: float) -> list[PendingImport]:
        """Pending orders no other replica holds and no failure holds back, held for
        ``lease_seconds`` by this one."""
        rows = await self._db.fetch(
            "WITH claimed AS (UPDATE imports SET claimed_until = now() + make_interval(secs => $2)"
            " WHERE (marketplace, marketplace_order_id) IN ("
            "  SELECT marketplace, marketplace_order_id FROM imports WHERE state = 'pending'"
            "  AND (claimed_until IS NULL OR claimed_until < now())"
            "  ORDER BY requested_at LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING marketplace, marketplace_order_id, merchant_order_id, attempts)"
            " SELECT c.*, f.source FROM claimed c"
            " LEFT JOIN fingerprints f USING (marketplace, marketplace_order_id)",
            limit,
            lease_seconds,
        )
        return [
            PendingImport(
                r["marketplace"],
                r["marketplace_order_id"],
                r["merchant_order_id"],
                r["attempts"],
                r["source"],
            )
            for r in rows
        ]

    async def done(self, pending: PendingImport) -> None:
        await self._db.execute(
            "UPDATE imports SET state = 'done', done_at = now(), attempts = attempts + 1,"
            " last_error = NULL, updated_at = now() WHERE marketplace = $1"
            " AND marketplace_order_id = $2 AND merchant_order_id = $3",
            pending.marketplace,
            pending.marketplace_order_id,
            pending.merchant_order_id,
        )

    async def attempt_failed(
        self, pending: PendingImport, error: str, give_up: bool, retry_in: float
    ) -> None:
        await self._db.execute(
            "UPDATE imports SET attempts = attempts + 1, last_error = $4, updated_at = now(),"
            " state = CASE WHEN $5 THEN 'failed' ELSE state END,"
            " claimed_until = now() + make_interval(secs => $6)"
            " WHERE marketplace = $1 AND marketplace_order_id = $2 AND merchant_order_id = $3",
            pending.marketplace,
            pending.marketplace_order_id,
            pending.merchant_order_id,
            error,
            give_up,
            retry_in,
        )


def poller_retention(*, poll_runs: timedelta, personal_data: timedelta) -> list[RetentionRule]:
    """Poll runs are history for ops; a quarantined order's JSON holds the customer's
    personal data, so it goes once nobody has seen the order for that long."""
    return [
        RetentionRule(
            "poll_runs",
            "WITH gone AS (DELETE FROM poll_runs WHERE id IN (SELECT id FROM poll_runs"
            " WHERE finished_at < now() - $2::interval LIMIT $1) RETURNING 1)"
            " SELECT count(*) FROM gone",
            poll_runs,
        ),
        RetentionRule(
            "quarantine",
            "WITH gone AS (DELETE FROM quarantined_orders WHERE (marketplace,"
            " marketplace_order_id) IN (SELECT marketplace, marketplace_order_id"
            " FROM quarantined_orders WHERE last_seen < now() - $2::interval LIMIT $1)"
            " RETURNING 1) SELECT count(*) FROM gone",
            personal_data,
        ),
    ]

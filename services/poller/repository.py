"""PostgreSQL adapter of the poller: watermarks, fingerprints, catch-ups, poll runs, locks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import asyncpg

from shared.contracts import OrderActionRequested
from shared.database import Connection, session_lock
from shared.unit_of_work import UnitOfWork

if TYPE_CHECKING:
    from services.poller.sync import PollReport

OrderKey = tuple[str, str]


class PollerRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def source_lock(self, source: str) -> AsyncIterator[bool]:
        """Yields True when this replica may poll ``source`` now (another one is not)."""
        async with (
            self._pool.acquire() as conn,
            session_lock(conn, f"lengow-orders:poll:{source}") as locked,
        ):
            yield locked

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

    async def save_fingerprints(self, source: str, rows: list[tuple[str, str, str]]) -> None:
        if not rows:
            return
        marketplaces, ids, digests = (list(column) for column in zip(*rows, strict=True))
        await self._pool.execute(
            "INSERT INTO fingerprints (marketplace, marketplace_order_id, fingerprint, source)"
            " SELECT m, i, f, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS r(m, i, f)"
            " ON CONFLICT (marketplace, marketplace_order_id) DO UPDATE SET"
            " fingerprint = excluded.fingerprint, source = excluded.source, published_at = now()",
            marketplaces,
            ids,
            digests,
            source,
        )

    async def source_of(self, marketplace: str, order_id: str) -> str | None:
        value: str | None = await self._pool.fetchval(
            "SELECT source FROM fingerprints WHERE marketplace = $1 AND marketplace_order_id = $2",
            marketplace,
            order_id,
        )
        return value

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
            " finished_at, fetched, published, unchanged, malformed, filtered, error)"
            " VALUES ($1, $2, $3, $4, $5, now(), $6, $7, $8, $9, $10, $11)",
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
        )


@dataclass(frozen=True)
class StoredAction:
    command_id: str
    source: str
    marketplace: str
    marketplace_order_id: str
    action_type: str
    arguments: dict[str, Any]
    state: str
    lengow_action_id: str | None
    attempts: int
    correlation_id: str | None
    created_at: datetime


class ActionRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @staticmethod
    def _stored(row: asyncpg.Record) -> StoredAction:
        return StoredAction(
            command_id=row["command_id"],
            source=row["source"],
            marketplace=row["marketplace"],
            marketplace_order_id=row["marketplace_order_id"],
            action_type=row["action_type"],
            arguments=row["arguments"],
            state=row["state"],
            lengow_action_id=row["lengow_action_id"],
            attempts=row["attempts"],
            correlation_id=row["correlation_id"],
            created_at=row["created_at"],
        )

    async def get(self, command_id: str) -> StoredAction | None:
        row = await self._conn.fetchrow("SELECT * FROM actions WHERE command_id = $1", command_id)
        return None if row is None else self._stored(row)

    async def add(
        self, requested: OrderActionRequested, source: str, correlation_id: str | None
    ) -> StoredAction:
        row = await self._conn.fetchrow(
            "INSERT INTO actions (command_id, source, marketplace, marketplace_order_id,"
            " action_type, arguments, state, correlation_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'sending', $7) RETURNING *",
            requested.command_id,
            source,
            requested.marketplace,
            requested.marketplace_order_id,
            requested.action_type,
            requested.arguments,
            correlation_id,
        )
        if row is None:  # pragma: no cover - INSERT ... RETURNING always returns the row
            raise RuntimeError("the action was not recorded")
        return self._stored(row)

    async def count_attempt(self, command_id: str) -> int:
        attempts: int = await self._conn.fetchval(
            "UPDATE actions SET attempts = attempts + 1, updated_at = now()"
            " WHERE command_id = $1 RETURNING attempts",
            command_id,
        )
        return attempts

    async def mark_sent(self, command_id: str, lengow_action_id: str) -> None:
        await self._conn.execute(
            "UPDATE actions SET state = 'sent', lengow_action_id = $2, sent_at = now(),"
            " updated_at = now() WHERE command_id = $1",
            command_id,
            lengow_action_id,
        )

    async def finish(self, command_id: str, state: str, errors: list[str]) -> None:
        await self._conn.execute(
            "UPDATE actions SET state = $2, errors = $3, updated_at = now() WHERE command_id = $1",
            command_id,
            state,
            errors,
        )

    async def touch(self, command_id: str) -> None:
        await self._conn.execute(
            "UPDATE actions SET updated_at = now() WHERE command_id = $1", command_id
        )

    async def to_check(self, limit: int) -> list[StoredAction]:
        rows = await self._conn.fetch(
            "SELECT * FROM actions WHERE state = 'sent' ORDER BY updated_at LIMIT $1", limit
        )
        return [self._stored(row) for row in rows]


class GatewayUnitOfWork(UnitOfWork):
    actions: ActionRepository

    def bind(self, conn: Connection) -> None:
        self.actions = ActionRepository(conn)

"""PostgreSQL adapter of the poller: watermarks, fingerprints, catch-ups, poll runs, locks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from services.poller.sync import PollReport

OrderKey = tuple[str, str]


class PollerRepository:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @asynccontextmanager
    async def source_lock(self, source: str) -> AsyncIterator[bool]:
        """Yields True when this replica may poll ``source`` now (another one is not)."""
        async with self._pool.acquire() as conn:
            key = f"lengow-orders:poll:{source}"
            locked = await conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key
            )
            try:
                yield bool(locked)
            finally:
                if locked:
                    await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)

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

    async def save_fingerprints(self, rows: list[tuple[str, str, str]]) -> None:
        if not rows:
            return
        marketplaces, ids, digests = (list(column) for column in zip(*rows, strict=True))
        await self._pool.execute(
            "INSERT INTO fingerprints (marketplace, marketplace_order_id, fingerprint)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])"
            " ON CONFLICT (marketplace, marketplace_order_id) DO UPDATE SET"
            " fingerprint = excluded.fingerprint, published_at = now()",
            marketplaces,
            ids,
            digests,
        )

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

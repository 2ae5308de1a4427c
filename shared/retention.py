"""Letting go of what is no longer needed, on a schedule: handled message ids, published
outbox rows, and what each service adds (poll runs, customers' personal data in stored
snapshots). Each rule is one SQL statement run in batches, so that no prune holds locks for
long; invoices are never pruned here (French law keeps them 10 years).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
from prometheus_client import Counter

from shared.background import BackgroundTask
from shared.logging import get_logger

log = get_logger(__name__)

PRUNED = Counter(
    "lengow_orders_pruned_rows_total",
    "Rows pruned or stripped of personal data by the retention rules.",
    ["service", "rule"],
)

#: Rows a statement touches at most per round, so that a prune never holds locks for long.
BATCH = 5000


@dataclass(frozen=True)
class RetentionRule:
    """``statement`` touches at most ``$1`` rows older than ``$2`` (an interval) and returns
    how many; it is repeated until it touches fewer."""

    name: str
    statement: str
    horizon: timedelta


def messaging_rules(*, inbox: timedelta, outbox: timedelta) -> list[RetentionRule]:
    """Every service's inbox and outbox."""
    return [
        RetentionRule(
            "inbox",
            "WITH gone AS (DELETE FROM inbox WHERE message_id IN (SELECT message_id FROM inbox"
            " WHERE received_at < now() - $2::interval LIMIT $1) RETURNING 1)"
            " SELECT count(*) FROM gone",
            inbox,
        ),
        RetentionRule(
            "outbox",
            "WITH gone AS (DELETE FROM outbox WHERE id IN (SELECT id FROM outbox"
            " WHERE published_at < now() - $2::interval LIMIT $1) RETURNING 1)"
            " SELECT count(*) FROM gone",
            outbox,
        ),
    ]


async def apply_rules(pool: asyncpg.Pool, service: str, rules: Sequence[RetentionRule]) -> int:
    """Apply every rule once; returns the rows touched."""
    total = 0
    for rule in rules:
        touched = 0
        while True:
            count: int = await pool.fetchval(rule.statement, BATCH, rule.horizon)
            touched += count
            if count < BATCH:
                break
        if touched:
            PRUNED.labels(service, rule.name).inc(touched)
            log.info("retention.pruned", rule=rule.name, rows=touched, horizon=str(rule.horizon))
        total += touched
    return total


class Pruner(BackgroundTask):
    """Applies a service's retention rules every ``interval`` seconds (first a minute after
    start, so that a start is not slowed by it)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        service: str,
        rules: Sequence[RetentionRule],
        *,
        interval: float,
        first_after: float = 60.0,
    ) -> None:
        self._pool = pool
        self._service = service
        self._rules = list(rules)
        self._interval = interval
        self._first_after = min(first_after, interval)
        super().__init__()
        self.name = f"pruner:{service}"

    async def run(self) -> None:
        await asyncio.sleep(self._first_after)
        while True:
            try:
                await apply_rules(self._pool, self._service, self._rules)
            except Exception as error:
                # The database away: the next round prunes what this one left.
                log.warning("retention.failed", error=str(error))
            await asyncio.sleep(self._interval)

"""Sandbox -> poller -> RabbitMQ -> processor -> PostgreSQL, with 1,000 orders."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

from sandbox.marketplace import now
from services.poller.app import Poller
from services.processor.app import Processor
from tests.integration.conftest import RunningSandbox

pytestmark = pytest.mark.integration


async def wait_until_stored(
    processor: Processor, db: asyncpg.Connection, expected: dict[str, str]
) -> dict[str, str]:
    stored: dict[str, str] = {}
    for _ in range(600):
        rows = await db.fetch("SELECT marketplace_order_id, lengow_status FROM orders")
        stored = {r["marketplace_order_id"]: r["lengow_status"] for r in rows}
        if stored == expected and await processor.relay.pending() == 0:
            return stored
        await asyncio.sleep(0.1)
    return stored


async def test_thousand_orders_reach_the_database_with_the_marketplace_status(
    sandbox: RunningSandbox,
    processor: Processor,
    db: asyncpg.Connection,
    poller_factory: Callable[..., Awaitable[Poller]],
) -> None:
    start = now() - timedelta(hours=5)
    for index in range(1000):
        sandbox.marketplace.create_order(
            at=start + timedelta(seconds=index),
            fulfillment=index % 9 == 0,
            missing_email=index % 13 == 0,
        )
    sandbox.marketplace.advance(now() - timedelta(hours=2), share=0.5)
    sandbox.marketplace.advance(now() - timedelta(hours=1), share=0.5)

    poller = await poller_factory(lengow_page_size=100)
    first = await poller.sync.incremental(poller.settings.lengow_sources[0])
    assert (first.fetched, first.published, first.error) == (1000, 1000, None)
    stored = await wait_until_stored(processor, db, sandbox.statuses())
    assert stored == sandbox.statuses()

    # Life goes on at the marketplace; the next poll carries only what changed.
    moved = sandbox.marketplace.advance(now() - timedelta(seconds=30), share=0.4)
    assert moved > 100
    second = await poller.sync.incremental(poller.settings.lengow_sources[0])
    assert second.published == moved
    stored = await wait_until_stored(processor, db, sandbox.statuses())
    assert stored == sandbox.statuses()

    # Every shipped order was announced, exactly once.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM orders WHERE lengow_status = 'shipped' AND NOT shipment_announced"
        )
        == 0
    )
    announcements = await db.fetch("SELECT body FROM outbox WHERE routing_key = 'order.shipped'")
    assert len(announcements) == await db.fetchval(
        "SELECT count(*) FROM orders WHERE shipment_announced"
    )
    assert len(announcements) > 100
    assert await db.fetchval("SELECT count(*) FROM order_transitions WHERE kind = 'rejected'") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

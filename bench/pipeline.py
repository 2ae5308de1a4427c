"""2-5. The services, each in its own process, on real servers."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import asyncpg

from bench.harness import Service, declare_queues, start_service, wait_until
from sandbox.marketplace import Marketplace
from tests.factories import encode, envelope


def snapshot_messages(count: int, *, shipped: bool = False) -> list[bytes]:
    """``order.changed`` envelopes of ``count`` distinct realistic orders."""
    from services.poller.orders import parse_order  # the poller's own parsing

    marketplace = Marketplace(seed=5)
    start = datetime.now(UTC) - timedelta(days=1)
    bodies = []
    for index in range(count):
        order = marketplace.create_order(at=start + timedelta(milliseconds=index))
        if shipped:
            marketplace.move(order.id, "waiting_shipment", start + timedelta(seconds=index))
            marketplace.move(order.id, "shipped", start + timedelta(seconds=index + 1))
        data = parse_order(order.raw).model_dump(mode="json")
        bodies.append(encode(envelope(data, "order.changed", source="bench")))
    return bodies


async def publish_all(
    amqp_url: str, exchange: str, routing_key: str, bodies: list[bytes], in_flight: int = 200
) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange)
        gate = asyncio.Semaphore(in_flight)

        async def one(body: bytes) -> None:
            async with gate:
                await target.publish(
                    aio_pika.Message(
                        body,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                    ),
                    routing_key=routing_key,
                )

        await asyncio.gather(*(one(body) for body in bodies))


async def count(database_url: str, query: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        value: int = await conn.fetchval(query)
        return value
    finally:
        await conn.close()


async def processor_rate(
    amqp_url: str, database_url: str, events: int, replicas: int = 1
) -> dict[str, Any]:
    """Sustained order.changed -> committed state, from a full queue, by ``replicas``
    processes; also how long until the events those changes emit were all published."""
    env = {"AMQP_URL": amqp_url, "DATABASE_URL": database_url, "PROCESSOR_OPS_PORT": "0"}
    first = await start_service("services.processor", env)
    await wait_until(lambda: _has_table(database_url, "processor.orders"), limit=60)
    await first.stop()  # the database is migrated; fill the queue while nobody consumes
    await declare_queues(amqp_url)
    bodies = snapshot_messages(events)
    await publish_all(amqp_url, "orders.events", "order.changed", bodies)
    running = [await start_service("services.processor", env) for _ in range(replicas)]
    try:
        await wait_until(
            lambda: _at_least(database_url, "SELECT count(*) FROM processor.inbox", events),
            limit=600,
        )
        await wait_until(
            lambda: _at_least(
                database_url,
                "SELECT count(*) FROM processor.outbox WHERE published_at IS NOT NULL",
                events,
            ),
            limit=600,
        )
        for service in running:
            service.sample_memory()
    finally:
        for service in running:
            await service.stop()
    conn = await asyncpg.connect(database_url)
    committed = await conn.fetchval(
        "SELECT extract(epoch FROM max(received_at) - min(received_at)) FROM processor.inbox"
    )
    published = await conn.fetchval(
        "SELECT extract(epoch FROM max(o.published_at) - min(i.received_at))"
        " FROM processor.outbox o, (SELECT min(received_at) AS received_at FROM processor.inbox) i"
    )
    await conn.close()
    return {
        "events": events,
        "replicas": replicas,
        "seconds": float(committed),
        "rate": events / float(committed),
        "published_rate": events / float(published),
        "peak_rss_mib": max(service.peak_rss_kib for service in running) / 1024,
    }


async def _has_table(database_url: str, table: str) -> bool:
    try:
        await count(database_url, f"SELECT count(*) FROM {table}")
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return False
    return True


async def _at_least(database_url: str, query: str, expected: int) -> bool:
    try:
        return await count(database_url, query) >= expected
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return False


async def keep_sampling(services: list[Service], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for service in services:
            service.sample_memory()
        await asyncio.sleep(0.5)


async def catchup(
    amqp_url: str, database_url: str, orders: int, *, again: bool = False
) -> dict[str, Any]:
    """A 3-day catch-up of ``orders`` orders: sandbox -> poller -> broker -> processor -> DB.
    With ``again``, the daily catch-up then reads the same 3 days, nothing changed, and
    publishes every order again (what repairs a loss downstream): its cost is measured."""
    from sandbox.server import base_url, create_sandbox, sandbox_state, serve
    from services.poller.settings import PollerSettings

    marketplace = Marketplace(seed=9)
    now = datetime.now(UTC)
    spread = timedelta(days=3) - timedelta(minutes=5)
    for index in range(orders):
        marketplace.create_order(
            at=now - spread + spread * index / orders, fulfillment=index % 9 == 0
        )
    app = create_sandbox(marketplace=marketplace)  # Lengow's contract: 100 a page, 500 a minute
    runner = await serve(app)
    env = {
        "AMQP_URL": amqp_url,
        "DATABASE_URL": database_url,
        "LENGOW_API_URL": base_url(runner),
        "LENGOW_SOURCES": json.dumps(
            [
                {
                    "name": "bench",
                    "account_id": 1000,
                    "access_token": "sandbox-access-token",
                    "secret": "sandbox-secret",
                }
            ]
        ),
        "LENGOW_PAGE_SIZE": "100",
        "POLL_INTERVAL_SECONDS": "3600",
        # The first poll reads the 3 days: the daily catch-up right after would read them again.
        "CATCHUP_TIME": "23:59:59",
        "PROCESSOR_OPS_PORT": "0",
        "POLLER_OPS_PORT": "0",
    }
    processor = await start_service("services.processor", env)
    services = [processor]
    stop = asyncio.Event()
    sampler = asyncio.create_task(keep_sampling(services, stop))
    try:
        await wait_until(lambda: _has_table(database_url, "processor.orders"), limit=60)
        started = time.perf_counter()
        poller = await start_service("services.poller", env)  # its first poll reads 3 days
        services.append(poller)
        await wait_until(
            lambda: _at_least(database_url, "SELECT count(*) FROM processor.orders", orders),
            limit=3600,
            every=0.5,
        )
        seconds = time.perf_counter() - started
        published = await wait_until(
            lambda: _at_least(
                database_url, "SELECT coalesce(sum(published), 0) FROM poller.poll_runs", orders
            ),
            limit=600,
        )
        del published
        repeat = await _catchup_again(amqp_url, database_url) if again else None
    finally:
        stop.set()
        await sampler
        for service in services:
            await service.stop()
        await runner.cleanup()
    calls = sandbox_state(app).calls["GET /v3.0/orders"]
    allowed = PollerSettings.model_fields["lengow_calls_per_minute"].default
    floor = calls / allowed * 60  # the budget's floor: calls needed / calls allowed a minute
    return {
        "orders": orders,
        "seconds": seconds,
        "rate": orders / seconds,
        "calls": calls,
        "calls_per_minute": allowed,
        "floor_seconds": floor,
        "ratio_to_floor": seconds / floor,
        "rate_limited": sum(sandbox_state(app).rate_limited.values()),
        "peak_rss_mib": {s.name: round(s.peak_rss_kib / 1024, 1) for s in services},
        "again": repeat,
    }


async def _catchup_again(amqp_url: str, database_url: str) -> dict[str, float]:
    """Trigger the daily catch-up (``poller.sync``) and time it until the processor handled
    every order it published again; nothing changed, so it stores nothing new."""
    from shared.command_client import publish_command

    handled = await count(database_url, "SELECT count(*) FROM processor.inbox")
    started = time.perf_counter()
    await publish_command(amqp_url, "poller.sync", {"catchup": True}, source="bench")
    query = "SELECT coalesce(sum(published), 0) FROM poller.poll_runs WHERE kind = 'catchup'"
    await wait_until(lambda: _at_least(database_url, query, 1), limit=3600, every=0.5)
    republished = await count(database_url, query)
    await wait_until(
        lambda: _at_least(
            database_url, "SELECT count(*) FROM processor.inbox", handled + republished
        ),
        limit=3600,
        every=0.5,
    )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "republished": republished, "rate": republished / seconds}


async def latency(amqp_url: str, database_url: str, rate: int, seconds: int) -> dict[str, Any]:
    """Publish ``order.changed`` at ``rate`` per second; time from publish to commit."""
    env = {"AMQP_URL": amqp_url, "DATABASE_URL": database_url, "PROCESSOR_OPS_PORT": "0"}
    service = await start_service("services.processor", env)
    total = rate * seconds
    bodies = snapshot_messages(total)
    sent_at: dict[str, float] = {}
    try:
        await wait_until(lambda: _has_table(database_url, "processor.orders"), limit=60)
        await declare_queues(amqp_url)
        await asyncio.sleep(1.0)
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("orders.events")
            start = time.time()
            pending = set()
            for index, body in enumerate(bodies):
                due = start + index / rate
                if (delay := due - time.time()) > 0:
                    await asyncio.sleep(delay)
                message_id = json.loads(body)["id"]
                sent_at[message_id] = time.time()
                pending.add(
                    asyncio.create_task(
                        exchange.publish(
                            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                            routing_key="order.changed",
                        )
                    )
                )
                pending = {task for task in pending if not task.done()}
            await asyncio.gather(*pending)
        await wait_until(
            lambda: _at_least(database_url, "SELECT count(*) FROM processor.inbox", total),
            limit=600,
        )
    finally:
        await service.stop()
    conn = await asyncpg.connect(database_url)
    # The inbox row is written in the transaction that commits the change.
    rows = await conn.fetch(
        "SELECT message_id::text AS id, extract(epoch FROM received_at) AS at FROM processor.inbox"
    )
    await conn.close()
    delays = [float(row["at"]) - sent_at[row["id"]] for row in rows if row["id"] in sent_at]
    return {"rate": rate, "events": total, "delays": delays}


def shipped_messages(count: int) -> list[bytes]:
    marketplace = Marketplace(seed=13)
    from services.poller.orders import parse_order
    from services.processor.outcomes import shipment_of  # what the processor emits

    start = datetime.now(UTC) - timedelta(hours=2)
    bodies = []
    for index in range(count):
        order = marketplace.create_order(at=start)
        marketplace.move(order.id, "waiting_shipment", start + timedelta(seconds=index))
        marketplace.move(order.id, "shipped", start + timedelta(seconds=index + 1))
        data = shipment_of(parse_order(order.raw)).model_dump(mode="json")
        bodies.append(encode(envelope(data, "order.shipped", source="bench")))
    return bodies


async def notifier_rate(
    amqp_url: str, database_url: str, invoices: int, replicas: int = 1
) -> dict[str, Any]:
    """Invoices rendered (PDF), archived and emailed per second, from a full queue, by
    ``replicas`` notifier processes."""
    import tempfile
    from pathlib import Path

    from sandbox.smtp import start_sink
    from tests.conftest import free_port

    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        sink = start_sink(Path(folder), port=port)
        env = {
            "AMQP_URL": amqp_url,
            "DATABASE_URL": database_url,
            "SMTP_PORT": str(port),
            "NOTIFIER_OPS_PORT": "0",
        }
        try:
            first = await start_service("services.notifier", env)
            await wait_until(lambda: _has_table(database_url, "notifier.invoices"), limit=60)
            await first.stop()
            await declare_queues(amqp_url)
            await publish_all(
                amqp_url, "orders.events", "order.shipped", shipped_messages(invoices)
            )
            running = [await start_service("services.notifier", env) for _ in range(replicas)]
            try:
                await wait_until(
                    lambda: _at_least(
                        database_url,
                        "SELECT count(*) FROM notifier.invoices WHERE email_status = 'sent'"
                        " AND kind = 'invoice'",
                        invoices,
                    ),
                    limit=1200,
                    every=0.5,
                )
                for service in running:
                    service.sample_memory()
            finally:
                for service in running:
                    await service.stop()
            emails = len(list(Path(folder).glob("*.eml")))  # noqa: ASYNC240
        finally:
            sink.stop()
    conn = await asyncpg.connect(database_url)
    span = await conn.fetchval(
        "SELECT extract(epoch FROM max(sent_at) - min(created_at)) FROM notifier.invoices"
        " WHERE kind = 'invoice'"
    )
    await conn.close()
    return {
        "invoices": invoices,
        "emails": emails,
        "seconds": float(span),
        "rate": invoices / float(span),
        "replicas": replicas,
        "peak_rss_mib": max(service.peak_rss_kib for service in running) / 1024,
    }

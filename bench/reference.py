"""1. The physical reference: raw aio-pika and asyncpg rates on this machine."""

from __future__ import annotations

import asyncio
import time

import aio_pika
import asyncpg

MESSAGE = b'{"id": "00000000-0000-0000-0000-000000000000", "type": "bench", "data": {}}' * 8


async def publish_confirm_rate(amqp_url: str, count: int, in_flight: int = 100) -> float:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(
            "bench.reference", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.purge()
        gate = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with gate:
                await channel.default_exchange.publish(
                    aio_pika.Message(MESSAGE, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key="bench.reference",
                )

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        return count / (time.perf_counter() - start)


async def consume_ack_rate(amqp_url: str, count: int, prefetch: int = 64) -> float:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue("bench.reference")
        done = asyncio.Event()
        seen = 0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal seen
            await message.ack()
            seen += 1
            if seen >= count:
                done.set()

        start = time.perf_counter()
        tag = await queue.consume(on_message)
        await done.wait()
        rate = count / (time.perf_counter() - start)
        await queue.cancel(tag)
        await channel.queue_delete("bench.reference")
        return rate


async def transaction_rate(database_url: str, count: int, concurrency: int = 10) -> float:
    """One INSERT per committed transaction, ``concurrency`` connections at once."""
    pool = await asyncpg.create_pool(database_url, min_size=concurrency, max_size=concurrency)
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial, body text)")
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate, pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO bench_rows (body) VALUES ($1)", "x" * 500)

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    rate = count / (time.perf_counter() - start)
    await pool.close()
    return rate


async def batched_rate(database_url: str, count: int, batch: int = 500) -> float:
    """Rows per second written ``batch`` at a time, one transaction per batch."""
    conn = await asyncpg.connect(database_url)
    await conn.execute("CREATE TABLE IF NOT EXISTS bench_rows (id bigserial, body text)")
    start = time.perf_counter()
    for _ in range(count // batch):
        async with conn.transaction():
            await conn.copy_records_to_table(
                "bench_rows", records=[("x" * 500,)] * batch, columns=["body"]
            )
    rate = count / (time.perf_counter() - start)
    await conn.close()
    return rate

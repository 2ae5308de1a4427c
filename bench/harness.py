"""What every benchmark needs: the servers, a fresh database, services as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import asyncpg
from faststream.rabbit import RabbitBroker

from shared.topology import CONSUMERS, dead_letters_of, declare_topology
from tests.infrastructure import amqp_server, postgres_server

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str]]:
    with amqp_server() as amqp_url, postgres_server() as postgres_url:
        yield amqp_url, postgres_url


@contextlib.asynccontextmanager
async def fresh_database(postgres_url: str) -> AsyncIterator[str]:
    name = f"lengow_bench_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    try:
        yield f"{postgres_url.rpartition('/')[0]}/{name}"
    finally:
        admin = await asyncpg.connect(postgres_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def declare_queues(amqp_url: str) -> None:
    """Every queue and binding, as the services declare them: a benchmark that publishes
    before its consumers run must not depend on a service having got that far."""
    broker = RabbitBroker(amqp_url, logger=None)
    await broker.connect()
    try:
        await declare_topology(broker)
    finally:
        await broker.stop()


async def delete_queues(amqp_url: str, *names: str) -> None:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
            await channel.queue_delete(dead_letters_of(name))


#: Every queue of the pipeline (each has its dead-letter queue beside it).
ALL_QUEUES = tuple(CONSUMERS)


@dataclass
class Service:
    """A service running as its own process, as in production."""

    name: str
    process: asyncio.subprocess.Process
    peak_rss_kib: int = 0
    samples: list[int] = field(default_factory=list)

    def sample_memory(self) -> None:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss_kib = max(self.peak_rss_kib, int(line.split()[1]))

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.sample_memory()
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def start_service(module: str, env: dict[str, str], name: str | None = None) -> Service:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env={**os.environ, "LOG_LEVEL": "WARNING", "LOG_FORMAT": "json", **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=ROOT,
    )
    return Service(name or module.rsplit(".", 1)[-1], process)


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], limit: float, every: float = 0.2
) -> float:
    """Seconds until ``await predicate()`` is true; raises after ``limit`` seconds."""
    start = time.perf_counter()
    while not await predicate():
        if time.perf_counter() - start > limit:
            raise TimeoutError(f"not done after {limit:g} s")
        await asyncio.sleep(every)
    return time.perf_counter() - start


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def describe(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 0.5) * 1000:.1f} ms, p99 {percentile(values, 0.99) * 1000:.1f}"
        f" ms, mean {statistics.fmean(values) * 1000:.1f} ms"
    )

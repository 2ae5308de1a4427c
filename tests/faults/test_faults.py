"""Faults while orders flow: nothing lost, nothing doubled (real services, bounded time).

After each fault the pipeline must converge: every order's status in PostgreSQL equals the
sandbox's, every shipped order got exactly one invoice email (Message-IDs counted in the
SMTP sink), invoice numbers have no gap, no outbox row is left unsent, and no dead-letter
queue holds anything.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import subprocess

import pytest

from tests.faults.conftest import ORDERS, OUTAGE
from tests.faults.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CONVERGE_SECONDS = 240


async def assert_nothing_lost_nothing_doubled(pipeline: Pipeline) -> None:
    state = await pipeline.converge(CONVERGE_SECONDS)
    pipeline.check_invoices(state)
    pipeline.check_ordering(state)
    assert await pipeline.dead_letters() == {}
    assert len(state["announced"]) > ORDERS // 20  # the run did ship orders


async def test_kill_9_every_service_at_random_moments(pipeline: Pipeline) -> None:
    pipeline.replicas = 2  # and two replicas of each consumer all along
    await pipeline.start(ORDERS)
    pipeline.start_life()
    rng = random.Random(7)
    for _ in range(9):
        await asyncio.sleep(rng.uniform(0.5, 2.5))
        await pipeline.kill_and_restart(rng)
    for service in ("processor", "notifier", "poller"):  # each at least once
        await pipeline.kill_and_restart(rng, service)
    await asyncio.sleep(3)
    await assert_nothing_lost_nothing_doubled(pipeline)
    assert sum(pipeline.kills.values()) == 12


needs_local_rabbitmq = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None,
    reason="rabbitmqctl is not on this machine (the broker runs elsewhere)",
)


@needs_local_rabbitmq
async def test_broker_connections_closed_and_broker_restarted(pipeline: Pipeline) -> None:
    await pipeline.start(ORDERS)
    pipeline.start_life()
    for _ in range(3):
        await asyncio.sleep(2)
        await asyncio.to_thread(
            subprocess.run,
            ["rabbitmqctl", "close_all_connections", "fault injection"],
            check=True,
            capture_output=True,
        )
    await asyncio.sleep(2)
    await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", "stop_app"], check=True, capture_output=True
    )
    await asyncio.sleep(3)
    await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", "start_app"], check=True, capture_output=True
    )
    await asyncio.sleep(3)
    await assert_nothing_lost_nothing_doubled(pipeline)


needs_local_postgresql = pytest.mark.skipif(
    shutil.which("pg_ctlcluster") is None,
    reason="pg_ctlcluster is not on this machine (the database runs elsewhere)",
)


@needs_local_postgresql
async def test_postgresql_restarted(pipeline: Pipeline) -> None:
    await pipeline.start(ORDERS)
    pipeline.start_life()
    await asyncio.sleep(4)
    version = sorted(await asyncio.to_thread(os.listdir, "/etc/postgresql"))[0]
    await asyncio.to_thread(
        subprocess.run,
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart", "-m", "fast"],
        check=True,
        capture_output=True,
    )
    await asyncio.sleep(3)
    await assert_nothing_lost_nothing_doubled(pipeline)


async def test_lengow_answering_500_and_429_for_a_while(pipeline: Pipeline) -> None:
    await pipeline.start(ORDERS)
    pipeline.start_life()
    await asyncio.sleep(2)
    loop = asyncio.get_running_loop()
    until = loop.time() + OUTAGE
    pipeline.sandbox.faults.retry_after = 0.5
    while loop.time() < until:  # every call fails while the outage lasts
        pipeline.sandbox.faults.statuses[:] = [500, 429, 503] * 20
        await asyncio.sleep(0.5)
    pipeline.sandbox.faults.statuses.clear()
    await assert_nothing_lost_nothing_doubled(pipeline)


async def test_smtp_down_for_a_while(pipeline: Pipeline) -> None:
    await pipeline.start(ORDERS)
    pipeline.start_life()
    await asyncio.sleep(2)
    pipeline.sink.stop()
    await asyncio.sleep(OUTAGE)
    pipeline.sink.start()
    await assert_nothing_lost_nothing_doubled(pipeline)

"""Faults while orders flow: nothing lost, nothing doubled (real services, bounded time).

After each fault the pipeline must converge: every order's status in PostgreSQL equals the
sandbox's, every shipped order got exactly one invoice email (Message-IDs counted in the
SMTP sink), invoice numbers have no gap, no outbox row is left unsent, and no dead-letter
queue holds anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from shared.amqp import PUBLISHER_CONNECTION_NAME
from shared.command_client import send_command
from tests.faults.conftest import LONG_OUTAGE, ORDERS, OUTAGE, REPORTS
from tests.faults.pipeline import Pipeline

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CONVERGE_SECONDS = 240


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
    await check_and_report("kill -9", pipeline, kills=sum(pipeline.kills.values()))
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
        await run("rabbitmqctl", "close_all_connections", "fault injection")
    await asyncio.sleep(2)
    await run("rabbitmqctl", "stop_app")
    await asyncio.sleep(3)
    await run("rabbitmqctl", "start_app")
    await asyncio.sleep(3)
    await check_and_report("broker connections closed, broker restarted", pipeline)


needs_local_postgresql = pytest.mark.skipif(
    shutil.which("pg_ctlcluster") is None,
    reason="pg_ctlcluster is not on this machine (the database runs elsewhere)",
)


@needs_local_postgresql
async def test_postgresql_restarted(pipeline: Pipeline) -> None:
    await pipeline.start(ORDERS)
    pipeline.start_life()
    await asyncio.sleep(4)
    await pg_ctl("restart")
    await asyncio.sleep(3)
    await check_and_report("postgresql restarted", pipeline)


async def test_lengow_answering_500_and_429_for_a_while(pipeline: Pipeline) -> None:
    await pipeline.start(ORDERS)
    # The outage hits a pipeline that runs: were it to start before the first poll, the
    # marketplace would ship and refund most orders unseen, and an order first seen refunded
    # gets no invoice (lifecycle.observe), so the scenario would check almost nothing.
    await pipeline.wait_until_all_seen()
    pipeline.start_life()
    await asyncio.sleep(2)
    loop = asyncio.get_running_loop()
    until = loop.time() + OUTAGE
    pipeline.sandbox.faults.retry_after = 0.5
    while loop.time() < until:  # every call fails while the outage lasts
        pipeline.sandbox.faults.statuses[:] = [500, 429, 503] * 20
        await asyncio.sleep(0.5)
    pipeline.sandbox.faults.statuses.clear()
    await check_and_report("lengow 500 and 429", pipeline)


async def test_smtp_down_for_a_while(pipeline: Pipeline) -> None:
    await pipeline.start(ORDERS)
    pipeline.start_life()
    await asyncio.sleep(2)
    pipeline.sink.stop()
    await asyncio.sleep(OUTAGE)
    pipeline.sink.start()
    await check_and_report("smtp down", pipeline)


def report(scenario: str, copies: Counter[int], **counts: object) -> None:
    """The scenario's counts, for the run's summary (``make test-faults`` prints them)."""
    figures = " ".join(f"{name}={value}" for name, value in counts.items())
    emails = ", ".join(f"{n} invoices x{k}" for k, n in sorted(copies.items()))
    REPORTS.append(f"{scenario}: {figures}; emails: {emails or 'none'}")


async def check_and_report(
    scenario: str,
    pipeline: Pipeline,
    later: Callable[[], dict[str, object]] | None = None,
    **counts: object,
) -> None:
    """Converge, check, and report the counts (``later``: those read once converged)."""
    state = await pipeline.converge(CONVERGE_SECONDS)
    copies = pipeline.check_invoices(state)
    credit_notes = pipeline.check_credit_notes(state)
    pipeline.check_ordering(state)
    dead = await pipeline.dead_letters()
    report(
        scenario,
        copies,
        orders=len(state["orders"]),
        invoices=len(state["invoices"]),
        credit_notes=credit_notes,
        dead_letters=sum(dead.values()),
        **counts,
        **(later() if later else {}),
    )
    assert dead == {}
    assert len(state["announced"]) > ORDERS // 20  # the run did ship orders


async def run(*command: str) -> None:
    await asyncio.to_thread(subprocess.run, list(command), check=True, capture_output=True)


async def pg_ctl(action: str) -> None:
    version = sorted(await asyncio.to_thread(os.listdir, "/etc/postgresql"))[0]
    await run("pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action, "-m", "fast")


async def test_smtp_takes_the_content_then_drops_or_answers_too_late(pipeline: Pipeline) -> None:
    """Emails per invoice: at most 2, all with the invoice's one Message-ID."""
    await pipeline.start(ORDERS)
    pipeline.start_life()
    faults = ["drop", 7.0] * 15  # 7 s: slower than SMTP_TIMEOUT_SECONDS (5)
    pipeline.sink.mails.after_data.extend(faults)
    await check_and_report(
        "smtp in doubt",
        pipeline,
        lambda: {"faults_injected": len(faults) - len(pipeline.sink.mails.after_data)},
    )


@needs_local_rabbitmq
async def test_the_publishers_connection_alone_is_lost(pipeline: Pipeline) -> None:
    """Only the connections that publish are closed; the consumers' stay up."""
    await pipeline.start(ORDERS)
    pipeline.start_life()
    closed = 0
    for _ in range(4):
        await asyncio.sleep(2)
        closed += await close_publisher_connections()
    await check_and_report("publisher connection lost", pipeline, connections_closed=closed)
    assert closed >= 3


async def close_publisher_connections() -> int:
    listing = await asyncio.to_thread(
        subprocess.run,
        ["rabbitmqctl", "-q", "list_connections", "pid", "client_properties"],
        check=True,
        capture_output=True,
        text=True,
    )
    pids = [
        line.split("\t", 1)[0]
        for line in listing.stdout.splitlines()
        if PUBLISHER_CONNECTION_NAME in line
    ]
    for pid in pids:
        with contextlib.suppress(subprocess.CalledProcessError):
            await run("rabbitmqctl", "close_connection", pid, "fault injection: publisher")
    return len(pids)


@needs_local_postgresql
async def test_postgresql_restarted_during_invoice_sending(pipeline: Pipeline) -> None:
    """The mail server takes 2 s to answer, so restarts land while emails are in flight."""
    await pipeline.start(ORDERS)
    pipeline.start_life()
    pipeline.sink.mails.after_data.extend([2.0] * 400)
    for _ in range(2):
        await asyncio.sleep(6)
        await pg_ctl("restart")
    pipeline.sink.mails.after_data.clear()
    await check_and_report("postgresql restarted mid-send", pipeline, restarts=2)


@needs_local_postgresql
async def test_long_postgresql_then_smtp_outages_dead_letter_nothing(pipeline: Pipeline) -> None:
    """A 5-minute PostgreSQL outage and a 30-minute SMTP one, scaled to LONG_OUTAGE: with
    redelivery pauses that double, nothing reaches a dead-letter queue and nothing is lost."""
    pipeline.settings["RETRY_DELAY_MAX"] = f"{max(8.0, LONG_OUTAGE / 7):g}"
    await pipeline.start(ORDERS)
    pipeline.start_life()
    await asyncio.sleep(3)  # orders are flowing
    await pg_ctl("stop")
    try:
        await asyncio.sleep(LONG_OUTAGE)
    finally:
        await pg_ctl("start")
    pipeline.sink.stop()
    await asyncio.sleep(LONG_OUTAGE)
    pipeline.sink.start()
    await check_and_report("long outages", pipeline, outage_seconds=LONG_OUTAGE)


async def test_lengow_loses_the_replies_to_actions(pipeline: Pipeline) -> None:
    """Lengow does the work and the reply is lost (504, or an answer after the timeout):
    no action is ever POSTed twice."""
    pipeline.settings["LENGOW_TIMEOUT_SECONDS"] = "5"
    await pipeline.start(ORDERS)
    waiting = await pipeline.wait_for_orders("waiting_acceptance", 30)
    lost = ["504", 8.0] * 10  # 8 s: longer than the poller waits for Lengow (5 s)
    pipeline.sandbox.faults.lost_replies.extend(lost)
    answers = await asyncio.gather(
        *(
            send_command(
                pipeline.amqp_url,
                "order.accept",
                {
                    "command_id": f"fault-accept-{order_id}",
                    "marketplace": "manomano_fr",
                    "marketplace_order_id": order_id,
                },
                source="fault-suite",
            )
            for order_id in waiting
        )
    )
    assert all(a.type == "command.accepted" for a in answers), [
        (a.type, a.data.get("reason")) for a in answers if a.type != "command.accepted"
    ]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONVERGE_SECONDS
    accepts = set(waiting)
    while loop.time() < deadline and not accepts <= {  # noqa: ASYNC110 - the sandbox's state
        a.order_id for a in pipeline.sandbox.marketplace.actions.values()
    }:
        await asyncio.sleep(1)
    pipeline.start_life()
    await asyncio.sleep(3)
    posts = Counter(
        (action.order_id, action.action_type)
        for action in pipeline.sandbox.marketplace.actions.values()
    )
    await check_and_report(
        "lengow replies lost",
        pipeline,
        accepted=len(waiting),
        replies_lost=len(lost) - len(pipeline.sandbox.faults.lost_replies),
        posts=sum(posts.values()),
        doubled_posts=sum(n - 1 for n in posts.values() if n > 1),
    )
    assert max(posts.values()) == 1
    assert accepts <= {order_id for order_id, _ in posts}  # every accept reached Lengow once


LIBFAKETIME = next(iter(Path("/usr/lib").glob("*/faketime/libfaketime.so.1")), None)


@pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime (Debian: faketime) is not installed")
async def test_the_pollers_clock_three_minutes_ahead_misses_nothing(pipeline: Pipeline) -> None:
    """The poller's host clock runs 3 minutes ahead (libfaketime, preloaded into the poller's
    process itself, so that it is the process the pipeline signals); the daily catch-up is
    kept out of the run, so only the 15-minute polls can find the changes: none is missed."""
    pipeline.service_environment["poller"] = {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME": "+3m",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }
    pipeline.settings.update({"CATCHUP_TIME": "23:59", "POLL_OVERLAP_SECONDS": "0"})
    await pipeline.start(ORDERS)
    pipeline.start_life()
    await asyncio.sleep(OUTAGE / 2)
    await check_and_report("poller clock +3 min", pipeline, skew_seconds=180)

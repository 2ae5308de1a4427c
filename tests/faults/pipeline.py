"""The whole pipeline with every service as its own process, for fault injection.

The sandbox and the SMTP sink run in the test's process (their state is the truth to compare
with); the poller, processor and notifier run as real processes that a test can kill -9.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg
from aiohttp import web

from sandbox.marketplace import Marketplace, now
from sandbox.server import SandboxState, base_url, create_sandbox, sandbox_state, serve
from shared.topology import CONSUMERS
from tests.conftest import SmtpSink

ROOT = Path(__file__).resolve().parents[2]
#: Every queue of the pipeline (each has its dead-letter queue beside it).
QUEUES = tuple(CONSUMERS)
MODULES = {
    "processor": "services.processor",
    "notifier": "services.notifier",
    "poller": "services.poller",
}


@dataclass
class Replica:
    service: str
    process: asyncio.subprocess.Process
    log: Path


@dataclass
class Pipeline:
    amqp_url: str
    database_url: str
    folder: Path
    sink: SmtpSink
    replicas: int = 1
    running: list[Replica] = field(default_factory=list)
    kills: Counter[str] = field(default_factory=Counter)
    launched: int = 0
    sandbox_app: web.Application | None = None
    sandbox_runner: web.AppRunner | None = None
    life: asyncio.Task[None] | None = None
    #: Settings of the services' processes for this scenario.
    settings: dict[str, str] = field(default_factory=dict)
    #: More environment for one service's replicas only (libfaketime's, say).
    service_environment: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def sandbox(self) -> SandboxState:
        assert self.sandbox_app is not None
        return sandbox_state(self.sandbox_app)

    async def start(self, orders: int) -> None:
        await self._reset_queues()
        marketplace = Marketplace(seed=21)
        start = now() - timedelta(hours=6)
        for index in range(orders):
            marketplace.create_order(
                at=start + timedelta(seconds=index),
                fulfillment=index % 11 == 0,
                missing_email=index % 17 == 0,
            )
        self.sandbox_app = create_sandbox(marketplace=marketplace)
        self.sandbox_runner = await serve(self.sandbox_app)
        for service in ("processor", "notifier", "poller"):
            for _ in range(self.replicas):
                await self.launch(service)

    def environment(self) -> dict[str, str]:
        assert self.sandbox_runner is not None
        return {
            **os.environ,
            "AMQP_URL": self.amqp_url,
            "DATABASE_URL": self.database_url,
            "LENGOW_API_URL": base_url(self.sandbox_runner),
            "LENGOW_SOURCES": json.dumps(
                [
                    {
                        "name": "ManoMano Standard",
                        "account_id": 1000,
                        "access_token": "sandbox-access-token",
                        "secret": "sandbox-secret",
                    }
                ]
            ),
            "LENGOW_PAGE_SIZE": "100",
            "LENGOW_BACKOFF_SECONDS": "0.2",
            "POLL_INTERVAL_SECONDS": "1",
            "SMTP_PORT": str(self.sink.port),
            "SMTP_TIMEOUT_SECONDS": "5",
            "SMTP_BACKOFF_SECONDS": "0.2",
            "RETRY_DELAY": "0.5",
            "RETRY_DELAY_MAX": "8",
            "SMTP_IN_DOUBT_PAUSE_SECONDS": "1",
            # A notifier killed mid-call leaves its claim on an invoice for this long.
            "INVOICE_CLAIM_SECONDS": "20",
            "PROCESSOR_OPS_PORT": "0",
            "NOTIFIER_OPS_PORT": "0",
            "POLLER_OPS_PORT": "0",
            "LOG_LEVEL": "WARNING",
            "LOG_FORMAT": "json",
            **self.settings,
        }

    async def launch(self, service: str) -> Replica:
        self.launched += 1
        log = self.folder / f"{service}-{self.launched}.log"
        with log.open("wb") as sink:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                MODULES[service],
                env={**self.environment(), **self.service_environment.get(service, {})},
                stdout=sink,
                stderr=sink,
                cwd=ROOT,
            )
        replica = Replica(service, process, log)
        self.running.append(replica)
        return replica

    async def kill_and_restart(self, rng: random.Random, service: str | None = None) -> str:
        candidates = [r for r in self.running if service in (None, r.service)]
        victim = rng.choice(candidates)
        victim.process.send_signal(signal.SIGKILL)
        await victim.process.wait()
        self.running.remove(victim)
        self.kills[victim.service] += 1
        await self.launch(victim.service)
        return victim.service

    def start_life(self, every: float = 1.5, share: float = 0.25) -> None:
        """Orders keep moving at the marketplace, as in real life."""

        async def live() -> None:
            while True:
                await asyncio.sleep(every)
                self.sandbox.marketplace.advance(now(), share)

        self.life = asyncio.create_task(live())

    async def stop_life(self) -> None:
        if self.life is not None:
            self.life.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.life

    async def stop(self) -> None:
        await self.stop_life()
        for replica in self.running:
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.running:
            try:
                await asyncio.wait_for(replica.process.wait(), 20)
            except TimeoutError:
                replica.process.kill()
        if self.sandbox_runner is not None:
            await self.sandbox_runner.cleanup()
        await self._reset_queues()

    async def _reset_queues(self) -> None:
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in QUEUES:
                await channel.queue_delete(name)
                await channel.queue_delete(f"{name}.dlq")

    # --- What is checked -----------------------------------------------------------------

    async def state(self) -> dict[str, Any]:
        conn = await asyncpg.connect(self.database_url)
        try:
            orders = await conn.fetch(
                "SELECT marketplace_order_id, lengow_status, source_updated_at,"
                " shipment_announced FROM processor.orders"
            )
            documents = await conn.fetch(
                "SELECT marketplace_order_id, kind, sequence, email_status, message_id,"
                " last_error FROM notifier.invoices"
            )
            unsent = 0
            for schema in ("processor", "notifier", "poller"):
                unsent += await conn.fetchval(
                    f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
                )
        except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
            return {
                "orders": {},
                "announced": set(),
                "invoices": [],
                "credit_notes": [],
                "unsent": -1,
                "updated": {},
            }
        finally:
            await conn.close()
        return {
            "orders": {r["marketplace_order_id"]: r["lengow_status"] for r in orders},
            "updated": {r["marketplace_order_id"]: r["source_updated_at"] for r in orders},
            "announced": {r["marketplace_order_id"] for r in orders if r["shipment_announced"]},
            "invoices": [dict(r) for r in documents if r["kind"] == "invoice"],
            "credit_notes": [dict(r) for r in documents if r["kind"] == "credit_note"],
            "unsent": unsent,
        }

    async def converge(self, limit: float) -> dict[str, Any]:
        """Wait until the database tells the marketplace's story and every invoice is settled."""
        await self.stop_life()
        state: dict[str, Any] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while loop.time() < deadline:
            # Read each round: actions sent before the life stopped still apply meanwhile.
            truth = {o.id: o.status for o in self.sandbox.marketplace.orders.values()}
            try:
                state = await self.state()
            except (OSError, asyncpg.PostgresError):
                await asyncio.sleep(1)
                continue
            settled = {
                i["marketplace_order_id"]
                for i in state["invoices"]
                if i["email_status"] in ("sent", "failed")
            }
            credited = {
                c["marketplace_order_id"]
                for c in state["credit_notes"]
                if c["email_status"] in ("sent", "failed")
            }
            if (
                state["orders"] == truth
                and state["announced"] <= settled
                and self.refunded(state, truth) <= credited
                and state["unsent"] == 0
            ):
                return state
            await asyncio.sleep(1)
        truth = {o.id: o.status for o in self.sandbox.marketplace.orders.values()}
        differing = {
            k: (v, state.get("orders", {}).get(k))
            for k, v in truth.items()
            if state.get("orders", {}).get(k) != v
        }
        raise AssertionError(
            f"no convergence after {limit:g} s: {len(differing)} orders differ"
            f" (e.g. {list(differing.items())[:5]}), outbox unsent {state.get('unsent')}"
        )

    @staticmethod
    def refunded(state: dict[str, Any], truth: dict[str, str]) -> set[str]:
        """The invoiced orders the marketplace refunded: each is owed one credit note."""
        return {order for order in state["announced"] if truth.get(order) == "refunded"}

    async def wait_for_orders(self, status: str, count: int, within: float = 120) -> list[str]:
        """Ids of ``count`` orders the processor holds in ``status`` (as the sandbox does)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                held = (await self.state())["orders"]
                truth = self.sandbox.marketplace.orders
                ready = sorted(
                    order_id
                    for order_id, held_status in held.items()
                    if held_status == status and truth[order_id].status == status
                )
                if len(ready) >= count:
                    return ready[:count]
            await asyncio.sleep(0.5)
        raise AssertionError(f"fewer than {count} orders in {status} after {within:g} s")

    async def wait_until_all_seen(self, within: float = 120) -> None:
        """Until the processor holds every order of the marketplace: the pipeline runs."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                held = (await self.state())["orders"]
                if set(held) >= set(self.sandbox.marketplace.orders):
                    return
            await asyncio.sleep(0.5)
        raise AssertionError(f"the processor did not see every order within {within:g} s")

    async def dead_letters(self) -> dict[str, int]:
        found = {}
        connection = await aio_pika.connect(self.amqp_url)
        async with connection:
            channel = await connection.channel()
            for name in QUEUES:
                try:
                    queue = await channel.declare_queue(f"{name}.dlq", passive=True)
                except aio_pika.exceptions.ChannelClosed:  # never declared: nothing in it
                    channel = await connection.channel()
                    continue
                count = queue.declaration_result.message_count or 0
                if count:
                    found[name] = count
        return found

    def check_invoices(self, state: dict[str, Any]) -> Counter[int]:
        """One invoice per announced order, numbered without gaps, one Message-ID each and at
        most two copies of it (an attempt in doubt is resent once). An invoice emailed but not
        sent is one whose two attempts were both in doubt. Returns how many invoices got how
        many emails."""
        invoices = state["invoices"]
        assert {i["marketplace_order_id"] for i in invoices} == state["announced"]
        assert sorted(i["sequence"] for i in invoices) == list(range(1, len(invoices) + 1))
        per_order: dict[str, list[str]] = {}
        for message in self.sink.messages():
            if message["X-Document-Kind"] == "credit_note":
                continue
            per_order.setdefault(message["X-Marketplace-Order-Id"], []).append(
                message["Message-ID"]
            )
        sent = {i["marketplace_order_id"] for i in invoices if i["email_status"] == "sent"}
        assert sent <= set(per_order)
        unconfirmed = set(per_order) - sent
        assert all(
            "not sent a third time" in (i["last_error"] or "")
            for i in invoices
            if i["marketplace_order_id"] in unconfirmed
        ), unconfirmed
        by_id = {i["marketplace_order_id"]: i["message_id"] for i in invoices}
        assert all(set(ids) == {by_id[order]} for order, ids in per_order.items())
        copies = Counter(len(ids) for ids in per_order.values())
        assert max(copies, default=1) <= 2, copies
        return copies

    def check_credit_notes(self, state: dict[str, Any]) -> int:
        """One credit note per refunded invoiced order, in a gapless series of its own, each
        emailed with one Message-ID and at most two copies. Returns how many there are."""
        truth = {o.id: o.status for o in self.sandbox.marketplace.orders.values()}
        notes = state["credit_notes"]
        assert sorted(c["marketplace_order_id"] for c in notes) == sorted(
            self.refunded(state, truth)
        )
        assert sorted(c["sequence"] for c in notes) == list(range(1, len(notes) + 1))
        emailed = Counter(
            message["Message-ID"]
            for message in self.sink.messages()
            if message["X-Document-Kind"] == "credit_note"
        )
        assert set(emailed) <= {c["message_id"] for c in notes}
        assert max(emailed.values(), default=1) <= 2, emailed
        return len(notes)

    def check_ordering(self, state: dict[str, Any]) -> None:
        """No older snapshot overwrote a newer one: stored times are the marketplace's."""
        for order in self.sandbox.marketplace.orders.values():
            assert state["updated"][order.id] == order.updated_at, order.id

"""``ordersctl`` as ops run it: a separate process, against the running processor."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from sandbox.marketplace import now
from services.poller.app import Poller
from services.processor.app import Processor
from tests.bus import publish
from tests.factories import ORDER, encode, envelope, order_snapshot
from tests.integration.conftest import RunningSandbox, order_at

pytestmark = pytest.mark.integration


async def ordersctl(
    amqp_url: str, database_url: str, *args: str, columns: int = 200
) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ordersctl",
        *args,
        env={
            **os.environ,
            "AMQP_URL": amqp_url,
            "DATABASE_URL": database_url,
            "COLUMNS": str(columns),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_accept_then_show_and_list(
    amqp_url: str, database_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_acceptance")
    code, output = await ordersctl(amqp_url, database_url, "accept", ORDER, "--command-id", "k1")
    assert code == 0, output
    assert f"accepted: order.accept {ORDER}" in output

    code, output = await ordersctl(amqp_url, database_url, "--json", "show", ORDER)
    assert code == 0, output
    shown: dict[str, Any] = json.loads(output)
    assert shown["order"]["lengow_status"] == "waiting_acceptance"
    assert shown["order"]["email"] == "camille.martin@example.fr"
    assert [h["to_status"] for h in shown["history"]] == ["waiting_acceptance"]
    assert [(c["command_id"], c["outcome"]) for c in shown["commands"]] == [("k1", "accepted")]

    code, output = await ordersctl(
        amqp_url, database_url, "--json", "list", "--status", "waiting_acceptance"
    )
    assert code == 0, output
    assert [row["marketplace_order_id"] for row in json.loads(output)] == [ORDER]


async def test_ids_are_never_cut_and_json_goes_anywhere(
    amqp_url: str, database_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_acceptance")
    for columns in (80, 60):
        code, output = await ordersctl(amqp_url, database_url, "list", columns=columns)
        assert code == 0, output
        assert ORDER in output, output  # whole, on one line, however narrow the terminal
    code, output = await ordersctl(amqp_url, database_url, "list", "--json")
    assert code == 0, output
    assert [row["marketplace_order_id"] for row in json.loads(output)] == [ORDER]
    code, output = await ordersctl(amqp_url, database_url, "show", ORDER, "--json")
    assert json.loads(output)["order"]["lengow_status"] == "waiting_acceptance"


async def test_rejected_command_exits_1_with_the_reason(
    amqp_url: str, database_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_acceptance")
    code, output = await ordersctl(
        amqp_url, database_url, "ship", ORDER, "--carrier", "Other", "--carrier-name", "Dupont"
    )
    assert code == 1
    assert f"order {ORDER} is waiting_acceptance: ship is not allowed" in output
    code, output = await ordersctl(amqp_url, database_url, "show", "M-NOPE")
    assert code == 1
    assert "no order M-NOPE" in output


async def test_no_answer_exits_3(amqp_url: str, database_url: str) -> None:
    # No processor is running: the command waits in its queue, the CLI stops waiting.
    code, output = await ordersctl(amqp_url, database_url, "--timeout", "1", "accept", "M-LATER")
    assert code == 3
    assert "no answer to order.accept within 1 s" in output
    # The operator is told how to ask again without doing it twice.
    assert "may still be carried out: run the same command again with --command-id ordersctl-" in (
        " ".join(output.split())
    )


async def test_dead_letters_are_listed_and_replayed(
    amqp_url: str, database_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    # A valid order.changed dead-lettered during an outage, as the consumer files it.
    await publish(
        amqp_url,
        "orders.dead-letter",
        "processor.order-changed",
        encode(envelope(order_snapshot(ORDER, "waiting_acceptance"))),
        message_id="lost-1",
        headers={
            "x-rejection-reason": "database unavailable",
            "x-original-exchange": "orders.events",
            "x-original-routing-key": "order.changed",
        },
    )
    code, output = await ordersctl(
        amqp_url, database_url, "--json", "dlq", "list", "processor.order-changed"
    )
    assert code == 0, output
    [letter] = json.loads(output)
    assert (letter["message_id"], letter["reason"]) == ("lost-1", "database unavailable")

    code, output = await ordersctl(
        amqp_url, database_url, "dlq", "replay", "processor.order-changed"
    )
    assert code == 0, output
    assert "replayed 1 messages" in output
    for _ in range(100):
        if await db.fetchval("SELECT count(*) FROM orders") == 1:
            break
        await asyncio.sleep(0.05)
    assert await db.fetchval("SELECT lengow_status FROM orders") == "waiting_acceptance"


async def test_show_tells_whether_the_order_is_marked_imported_at_lengow(
    amqp_url: str,
    database_url: str,
    processor: Processor,
    db: asyncpg.Connection,
    sandbox: RunningSandbox,
    poller_factory: Callable[..., Awaitable[Poller]],
) -> None:
    order = sandbox.marketplace.create_order(at=now() - timedelta(minutes=5))
    poller = await poller_factory()
    await poller.recorded.start()
    await poller.sync.incremental(poller.settings.lengow_sources[0])
    for _ in range(200):
        await poller.imports.mark_pending()
        if sandbox.marketplace.moi_calls[order.id]:
            break
        await asyncio.sleep(0.05)
    code, output = await ordersctl(amqp_url, database_url, "--json", "show", order.id)
    assert code == 0, output
    imported = json.loads(output)["lengow_import"]
    assert imported["state"] == "done"
    assert (
        imported["merchant_order_id"]
        == sandbox.marketplace.orders[order.id].raw["merchant_order_id"][0]
    )

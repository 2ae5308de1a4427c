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
from tests.conftest import SmtpSink
from tests.factories import ORDER, encode, envelope, order_snapshot
from tests.integration.conftest import RunningSandbox, order_at

pytestmark = pytest.mark.integration


async def ordersctl(
    amqp_url: str,
    database_url: str,
    *args: str,
    columns: int = 200,
    env: dict[str, str] | None = None,
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
            **(env or {}),
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


async def test_attention_list_by_source_and_the_daily_report(
    amqp_url: str,
    database_url: str,
    processor: Processor,
    db: asyncpg.Connection,
    smtp_sink: SmtpSink,
) -> None:
    from datetime import UTC, datetime

    placed = datetime.now(UTC) - timedelta(hours=50)  # two hours past the acceptance delay
    late = order_snapshot("M-LATE", "waiting_acceptance", marketplace_order_date=placed.isoformat())
    late["lengow_source"] = "ManoMano Fulfillment"
    stuck = order_snapshot("M-STUCK", "waiting_shipment")  # unchanged since the base time
    stuck["lengow_source"] = "ManoMano Standard"
    for snapshot in (late, stuck):
        await publish(amqp_url, "orders.events", "order.changed", encode(envelope(snapshot)))
    for _ in range(100):
        if await db.fetchval("SELECT count(*) FROM orders") == 2:
            break
        await asyncio.sleep(0.1)

    code, output = await ordersctl(
        amqp_url, database_url, "list", "--source", "ManoMano Fulfillment", "--json"
    )
    assert code == 0, output
    assert [(r["marketplace_order_id"], r["source"]) for r in json.loads(output)] == [
        ("M-LATE", "ManoMano Fulfillment")
    ]

    code, output = await ordersctl(amqp_url, database_url, "show", "M-LATE", "--json")
    assert code == 0, output
    deadlines = {d["deadline"]: d for d in json.loads(output)["deadlines"]}
    assert deadlines["acceptance"]["pending"] is True
    assert datetime.fromisoformat(deadlines["acceptance"]["due_at"]) == placed + timedelta(hours=48)
    assert deadlines["shipment"]["pending"] is False

    code, output = await ordersctl(amqp_url, database_url, "attention", "--json")
    found = json.loads(output)
    assert code == 1, output  # something needs a person: cron and monitors see it
    assert [(d["marketplace_order_id"], d["deadline"], d["state"]) for d in found["deadlines"]] == [
        ("M-LATE", "acceptance", "late")
    ]
    code, output = await ordersctl(amqp_url, database_url, "attention")
    assert code == 1 and "Orders near or past a deadline: 1" in output, output

    today = datetime.now(UTC).date().isoformat()
    code, output = await ordersctl(
        amqp_url,
        database_url,
        "report",
        "--date",
        today,
        "--email",
        env={"OPS_REPORT_EMAIL": "ops@example.fr", "SMTP_PORT": str(smtp_sink.port)},
    )
    assert code == 0, output
    assert "emailed to ops@example.fr" in output
    (mail,) = smtp_sink.messages()
    assert mail["To"] == "ops@example.fr" and today in mail["Subject"]
    assert "stuck: 1" in mail.get_content() and "M-STUCK" in mail.get_content()
    code, output = await ordersctl(amqp_url, database_url, "report", "--date", today, "--json")
    report = json.loads(output)
    assert [r["marketplace_order_id"] for r in report["stuck"]] == ["M-STUCK"]
    assert set(report) == {
        "day",
        "found_only_by_the_catchup",
        "status_differed_at_lengow",
        "stuck",
        "actions_failed",
        "commands_rejected",
        "documents_failed",
    }
    code, output = await ordersctl(amqp_url, database_url, "report", "--date", "yesterday")
    assert code == 2 and "--date must be a day" in output

"""Least privilege, on the real broker and database: each service as its own broker user and
database role can do its work and nothing it does not need."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from datetime import timedelta

import aio_pika
import aiormq
import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from sandbox.marketplace import now
from services.notifier.app import create_app as notifier_app
from services.poller.app import create_app as poller_app
from services.processor.app import create_app as processor_app
from services.processor.settings import ProcessorSettings
from shared.access import ORDERSCTL, SERVICES, provision_locally
from shared.command_client import send_command
from shared.topology import declare_topology
from tests.bus import delete_queues
from tests.conftest import SmtpSink
from tests.integration.conftest import (
    NOTIFIER_QUEUES,
    POLLER_QUEUES,
    PROCESSOR_QUEUES,
    RunningSandbox,
    notifier_settings,
    poller_settings,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="no local rabbitmqctl"),
]


@pytest.fixture
async def urls(amqp_url: str, database_url: str) -> dict[str, dict[str, str]]:
    """Every user and role provisioned with fresh passwords; each one's URLs. The exchanges
    are declared first, as any service does at start: on a new broker this test may be the
    first to run, and publishing to a missing exchange is refused to everyone alike."""
    async with RabbitBroker(amqp_url) as broker:
        await declare_topology(broker)
    secrets = {name: uuid.uuid4().hex for name in [*SERVICES, ORDERSCTL]}
    return await provision_locally(secrets, amqp_url, database_url)


async def publish_as(url: str, exchange: str, routing_key: str, body: bytes = b"{}") -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange, ensure=False)
        await target.publish(
            aio_pika.Message(body, user_id=url.split("//")[1].split(":")[0]),
            routing_key=routing_key,
        )


async def test_only_the_poller_may_publish_order_changed(
    urls: dict[str, dict[str, str]],
) -> None:
    """Before, every service and ordersctl had the administrator's user: any of them could
    push a forged order.changed (which consumes an invoice number and mails an invoice)."""
    await publish_as(urls["poller"]["AMQP_URL"], "orders.events", "order.changed")
    for intruder in ("processor", "notifier", ORDERSCTL):
        with pytest.raises(aiormq.exceptions.AMQPError):
            await publish_as(urls[intruder]["AMQP_URL"], "orders.events", "order.changed")
    with pytest.raises(aiormq.exceptions.AMQPError):
        await publish_as(urls["notifier"]["AMQP_URL"], "orders.events", "order.shipped")
    # ordersctl sends commands, and nothing else.
    await publish_as(urls[ORDERSCTL]["AMQP_URL"], "orders.commands", "order.accept")
    with pytest.raises(aiormq.exceptions.AMQPError):
        await publish_as(urls["notifier"]["AMQP_URL"], "orders.commands", "order.refund")


async def test_each_role_reaches_its_own_schema_only(
    database_url: str, urls: dict[str, dict[str, str]]
) -> None:
    processor = await asyncpg.connect(urls["processor"]["DATABASE_URL"])
    try:
        await processor.execute("CREATE TABLE processor.mine (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await processor.execute("CREATE TABLE notifier.theirs (id int)")
        assert not await processor.fetchval(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        )
    finally:
        await processor.close()
    reader = await asyncpg.connect(urls[ORDERSCTL]["DATABASE_URL"])
    try:
        assert await reader.fetchval("SELECT count(*) FROM processor.mine") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("INSERT INTO processor.mine VALUES (1)")
    finally:
        await reader.close()


async def test_the_services_run_as_themselves(
    amqp_url: str,
    urls: dict[str, dict[str, str]],
    smtp_sink: SmtpSink,
    sandbox: RunningSandbox,
) -> None:
    """The three services, each with its own broker user and database role, declare the
    topology, migrate their schemas and carry orders from Lengow to the invoice email; ordersctl,
    as its own user, sends a command that reaches Lengow and reads the result."""
    await delete_queues(amqp_url, *PROCESSOR_QUEUES, *NOTIFIER_QUEUES, *POLLER_QUEUES)
    at = now() - timedelta(minutes=30)
    shipped = sandbox.marketplace.create_order(at=at, status="shipped").id
    waiting = sandbox.marketplace.create_order(at=at + timedelta(seconds=1)).id
    processor = processor_app(
        ProcessorSettings(
            amqp_url=urls["processor"]["AMQP_URL"],
            database_url=urls["processor"]["DATABASE_URL"],
            processor_ops_port=0,
            log_format="console",
        )
    )
    notifier = notifier_app(
        notifier_settings(urls["notifier"]["AMQP_URL"], urls["notifier"]["DATABASE_URL"], smtp_sink)
    )
    poller = poller_app(
        poller_settings(
            urls["poller"]["AMQP_URL"],
            urls["poller"]["DATABASE_URL"],
            sandbox,
            poll_interval_seconds=0.5,
        )
    )
    async with processor, notifier, poller:
        for _ in range(300):
            if smtp_sink.messages():
                break
            await asyncio.sleep(0.1)
        answer = await send_command(
            urls[ORDERSCTL]["AMQP_URL"],
            "order.accept",
            {
                "command_id": "as-ordersctl",
                "marketplace": "manomano_fr",
                "marketplace_order_id": waiting,
            },
            source="ordersctl",
        )
        for _ in range(300):
            if any(a.order_id == waiting for a in sandbox.marketplace.actions.values()):
                break
            await asyncio.sleep(0.1)
    [mail] = smtp_sink.messages()
    assert mail["X-Marketplace-Order-Id"] == shipped
    assert answer.type == "command.accepted", answer.data
    assert [a.action_type for a in sandbox.marketplace.actions.values()] == ["accept"]
    reader = await asyncpg.connect(urls[ORDERSCTL]["DATABASE_URL"])
    try:
        stored = await reader.fetchval(
            "SELECT count(*) FROM processor.orders WHERE marketplace_order_id = $1", shipped
        )
        assert stored == 1
    finally:
        await reader.close()

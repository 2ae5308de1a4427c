from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp import web

from sandbox.marketplace import MARKETPLACE, MARKETPLACE_DOCUMENT, Marketplace
from sandbox.server import base_url, create_sandbox, sandbox_state, serve
from services.notifier.app import Notifier
from services.notifier.app import create_app as notifier_app
from services.notifier.settings import NotifierSettings
from services.poller.app import Poller
from services.poller.settings import PollerSettings
from services.processor.app import Processor, create_app
from services.processor.settings import ProcessorSettings
from shared.database import register_json_codecs
from shared.topology import declare_topology
from tests.bus import delete_queues, publish
from tests.conftest import SmtpSink
from tests.factories import ORDER, encode, envelope, order_snapshot

pytestmark = pytest.mark.integration

PROCESSOR_QUEUES = (
    "processor.order-changed",
    "processor.order-changed.dlq",
    "processor.commands",
    "processor.commands.dlq",
    "processor.marketplace-rules",
    "processor.marketplace-rules.dlq",
    "processor.action-failed",
    "processor.action-failed.dlq",
)


@pytest.fixture
async def processor(amqp_url: str, database_url: str) -> AsyncIterator[Processor]:
    """The real processor, in this event loop, on the real broker and a fresh database."""
    await delete_queues(amqp_url, *PROCESSOR_QUEUES)
    settings = ProcessorSettings(
        amqp_url=amqp_url,
        database_url=database_url,
        retry_delay=0.1,
        retry_delay_max=0.1,
        outbox_poll_interval=0.1,
        log_format="console",
        processor_ops_port=0,
    )
    app = create_app(settings)
    async with app:
        processor: Processor = app.context.get("processor")
        await publish_rules(amqp_url, processor)
        yield processor


async def publish_rules(
    amqp_url: str, processor: Processor, marketplace: str = MARKETPLACE
) -> None:
    """What the poller publishes once it read Lengow's marketplaces document (the sandbox's),
    and wait until the processor stored it."""
    rules = MARKETPLACE_DOCUMENT[marketplace]
    await publish(
        amqp_url,
        "orders.events",
        "marketplace.rules_changed",
        encode(
            envelope(
                {
                    "marketplace": marketplace,
                    "source": "ManoMano Standard",
                    "fetched_at": datetime.now(UTC).isoformat(),
                    "rules": rules,
                },
                "marketplace.rules_changed",
                source="poller",
            )
        ),
    )
    for _ in range(200):
        async with processor.pool.acquire() as conn:
            if await conn.fetchval(
                "SELECT 1 FROM marketplace_rules WHERE marketplace = $1", marketplace
            ):
                return
        await asyncio.sleep(0.02)
    raise AssertionError("the processor never stored the marketplace's rules")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "processor"})
    await register_json_codecs(conn)
    yield conn
    await conn.close()


# --- Lengow sandbox and poller -----------------------------------------------------------

POLLER_QUEUES = (
    "poller.sync",
    "poller.sync.dlq",
    "poller.action-requested",
    "poller.action-requested.dlq",
    "poller.order-recorded",
    "poller.order-recorded.dlq",
    "poller.order-linked",
    "poller.order-linked.dlq",
)


class RunningSandbox:
    def __init__(self, app: web.Application, url: str) -> None:
        self.app = app
        self.url = url
        self.state = sandbox_state(app)
        self.marketplace = self.state.marketplace

    def statuses(self) -> dict[str, str]:
        return {order.id: order.status for order in self.marketplace.orders.values()}

    def calls(self, route: str) -> int:
        return self.state.calls[route]


@pytest.fixture
async def sandbox() -> AsyncIterator[RunningSandbox]:
    app = create_sandbox(marketplace=Marketplace(seed=11), page_size=50)
    runner = await serve(app)
    yield RunningSandbox(app, base_url(runner))
    await runner.cleanup()


def poller_settings(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, **overrides: object
) -> PollerSettings:
    values: dict[str, object] = {
        "amqp_url": amqp_url,
        "database_url": database_url,
        "lengow_api_url": sandbox.url,
        "lengow_sources": [
            {
                "name": "ManoMano Standard",
                "account_id": 1000,
                "access_token": "sandbox-access-token",
                "secret": "sandbox-secret",
            }
        ],
        "lengow_backoff_seconds": 0.01,
        "poller_ops_port": 0,
        "retry_delay": 0.1,
        "retry_delay_max": 0.1,
        "log_format": "console",
        **overrides,
    }
    return PollerSettings.model_validate(values)


@pytest.fixture
async def poller_factory(
    amqp_url: str, database_url: str, sandbox: RunningSandbox
) -> AsyncIterator[Callable[..., Awaitable[Poller]]]:
    """Pollers connected to the broker, database and sandbox, without their schedule, so a
    test decides when each poll runs."""
    started: list[Poller] = []
    await delete_queues(amqp_url, *POLLER_QUEUES)

    async def start(**overrides: object) -> Poller:
        poller = Poller(poller_settings(amqp_url, database_url, sandbox, **overrides))
        await poller.open()
        await poller.broker.connect()
        await declare_topology(poller.broker)  # as started() does: the queues and bindings
        started.append(poller)
        return poller

    yield start
    for poller in started:
        await poller.broker.stop()
        await poller.close()


# --- Notifier -----------------------------------------------------------------------------

NOTIFIER_QUEUES = (
    "notifier.order-shipped",
    "notifier.order-shipped.dlq",
    "notifier.order-refunded",
    "notifier.order-refunded.dlq",
)


def notifier_settings(
    amqp_url: str, database_url: str, sink: SmtpSink, **overrides: object
) -> NotifierSettings:
    values: dict[str, object] = {
        "amqp_url": amqp_url,
        "database_url": database_url,
        "smtp_port": sink.port,
        "smtp_attempts": 2,
        "smtp_backoff_seconds": 0.05,
        "smtp_timeout_seconds": 5,
        "retry_delay": 0.2,
        "retry_delay_max": 0.2,
        "outbox_poll_interval": 0.1,
        "notifier_ops_port": 0,
        "seller_legal_name": "Outils Martin SAS",
        "seller_siren": "123456789",
        "seller_siret": "12345678900012",
        "seller_vat_number": "FR12123456789",
        "log_format": "console",
        **overrides,
    }
    return NotifierSettings.model_validate(values)


@pytest.fixture
async def notifier_factory(
    amqp_url: str, database_url: str, smtp_sink: SmtpSink
) -> AsyncIterator[Callable[..., Awaitable[Notifier]]]:
    """Start one or more real notifiers (same queue, same database)."""
    await delete_queues(amqp_url, *NOTIFIER_QUEUES)
    stack = contextlib.AsyncExitStack()

    async def start(**overrides: object) -> Notifier:
        app = notifier_app(notifier_settings(amqp_url, database_url, smtp_sink, **overrides))
        await stack.enter_async_context(app)
        notifier: Notifier = app.context.get("notifier")
        return notifier

    async with stack:
        yield start


async def order_at(
    amqp_url: str, db: asyncpg.Connection, status: str, minutes: int = 0, order_id: str = ORDER
) -> None:
    """Publish the order at ``status`` (observed ``minutes`` after the base time) and wait
    until the processor stored it."""
    await publish(
        amqp_url,
        "orders.events",
        "order.changed",
        encode(envelope(order_snapshot(order_id, status, minutes=minutes))),
    )
    for _ in range(100):
        stored = await db.fetchval(
            "SELECT lengow_status FROM orders WHERE marketplace_order_id = $1", order_id
        )
        if stored == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"order never reached {status}")

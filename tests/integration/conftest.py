from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.processor.app import Processor, ProcessorSettings, create_app
from shared.database import register_json_codecs
from tests.bus import delete_queues

pytestmark = pytest.mark.integration

PROCESSOR_QUEUES = ("processor.order-changed", "processor.order-changed.dlq")


@pytest.fixture
async def processor(amqp_url: str, database_url: str) -> AsyncIterator[Processor]:
    """The real processor, in this event loop, on the real broker and a fresh database."""
    await delete_queues(amqp_url, *PROCESSOR_QUEUES)
    settings = ProcessorSettings(
        amqp_url=amqp_url,
        database_url=database_url,
        retry_delay=0.1,
        outbox_poll_interval=0.1,
        log_format="console",
    )
    app = create_app(settings)
    async with app:
        processor: Processor = app.context.get("processor")
        yield processor


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "processor"})
    await register_json_codecs(conn)
    yield conn
    await conn.close()

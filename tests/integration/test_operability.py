"""Health and metrics endpoints of a running service."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from services.processor.app import Processor
from shared.observability import OpsServer
from tests.bus import publish
from tests.factories import encode, envelope, order_snapshot

pytestmark = pytest.mark.integration


async def test_processor_serves_health_and_metrics(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await publish(
        amqp_url,
        "orders.events",
        "order.changed",
        encode(envelope(order_snapshot(status="shipped"))),
    )
    for _ in range(100):
        if await db.fetchval("SELECT count(*) FROM orders"):
            break
        await asyncio.sleep(0.05)
    await processor.refresh_metrics()
    base = f"http://127.0.0.1:{processor.ops.port}"
    async with httpx.AsyncClient(base_url=base) as http:
        live = await http.get("/health/live")
        ready = await http.get("/health/ready")
        metrics = (await http.get("/metrics")).text
    assert live.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["checks"] == ["postgresql", "rabbitmq"]
    assert 'lengow_orders_transitions_total{kind="initial"}' in metrics
    assert 'lengow_orders_orders{status="shipped"} 1.0' in metrics
    assert 'lengow_orders_outbox_pending{service="processor"}' in metrics
    assert "faststream_received_messages_total" in metrics


async def test_readiness_names_what_is_down() -> None:
    async def database() -> None:
        raise ConnectionRefusedError("connection refused")

    async def broker() -> None:
        return None

    ops = OpsServer("test", "127.0.0.1", 0, {"postgresql": database, "rabbitmq": broker})
    await ops.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as http:
            ready = await http.get("/health/ready")
            live = await http.get("/health/live")
    finally:
        await ops.stop()
    assert ready.status_code == 503
    assert ready.json()["failures"] == {"postgresql": "ConnectionRefusedError: connection refused"}
    assert live.status_code == 200

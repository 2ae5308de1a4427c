"""Health and metrics endpoints of a running service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from services.notifier.app import Notifier
from services.processor.app import Processor
from shared.observability import REGISTRY, OpsServer, consumer_check
from tests.bus import publish
from tests.conftest import SmtpSink
from tests.factories import encode, envelope, order_shipped, order_snapshot

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
    assert ready.json()["checks"] == ["postgresql", "processor.order-changed", "rabbitmq"]
    assert 'lengow_orders_transitions_total{kind="initial"}' in metrics
    assert 'lengow_orders_orders{status="shipped"} 1.0' in metrics
    assert 'lengow_orders_outbox_pending{service="processor"}' in metrics
    assert "faststream_received_messages_total" in metrics


async def test_readiness_names_what_is_down() -> None:
    async def database() -> None:
        raise ConnectionRefusedError("connection refused")

    async def broker() -> None:
        return None

    ops = OpsServer(
        "test",
        "127.0.0.1",
        0,
        {
            "postgresql": database,
            "rabbitmq": broker,
            "q.busy": consumer_check(lambda: True, "q.busy"),
            "q.cancelled": consumer_check(lambda: False, "q.cancelled"),
        },
    )
    await ops.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as http:
            ready = await http.get("/health/ready")
            live = await http.get("/health/live")
    finally:
        await ops.stop()
    assert ready.status_code == 503
    assert ready.json()["failures"] == {
        "postgresql": "ConnectionRefusedError: connection refused",
        "q.cancelled": "ConnectionError: not consuming q.cancelled",
    }
    assert live.status_code == 200


async def test_notifier_reports_its_consumer_and_each_delivery(
    amqp_url: str, smtp_sink: SmtpSink, notifier_factory: Callable[..., Awaitable[Notifier]]
) -> None:
    def settled(outcome: str) -> float:
        labels = {"queue": "notifier.order-shipped", "outcome": outcome}
        return REGISTRY.get_sample_value("lengow_orders_delivery_seconds_count", labels) or 0.0

    before = {outcome: settled(outcome) for outcome in ("handled", "dead_lettered")}
    notifier = await notifier_factory()
    shipped = encode(envelope(order_shipped(), "order.shipped"))
    await publish(amqp_url, "orders.events", "order.shipped", shipped)
    await publish(amqp_url, "orders.events", "order.shipped", b"not json")
    for _ in range(100):  # both deliveries settled
        if all(settled(outcome) == before[outcome] + 1 for outcome in before):
            break
        await asyncio.sleep(0.1)
    base = f"http://127.0.0.1:{notifier.ops.port}"
    async with httpx.AsyncClient(base_url=base) as http:
        ready = await http.get("/health/ready")
        metrics = (await http.get("/metrics")).text
    assert ready.json()["checks"] == ["notifier.order-shipped", "postgresql", "rabbitmq"]
    assert {outcome: settled(outcome) - before[outcome] for outcome in before} == {
        "handled": 1.0,
        "dead_lettered": 1.0,
    }
    assert 'lengow_orders_delivery_seconds_bucket{le="0.005",outcome="handled"' in metrics
    assert len(smtp_sink.messages()) == 1

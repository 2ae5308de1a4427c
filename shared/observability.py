"""What ops watch: ``/health/live``, ``/health/ready`` and Prometheus ``/metrics``.

Each service runs one small HTTP server (aiohttp) beside its consumers. Readiness runs the
service's checks (broker and database reachable); metrics are FastStream's own (messages
received, processed, failed, their duration) plus the domain counters of each service.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

import asyncpg
from aiohttp import web
from faststream.rabbit import RabbitBroker
from faststream.rabbit.prometheus import RabbitPrometheusMiddleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from shared.logging import get_logger

log = get_logger(__name__)

Check = Callable[[], Awaitable[None]]

OUTBOX_PENDING = Gauge(
    "lengow_orders_outbox_pending", "Outbox messages not yet published.", ["service"]
)
OUTBOX_OLDEST_SECONDS = Gauge(
    "lengow_orders_outbox_oldest_seconds",
    "Age of the oldest unpublished outbox message (the outbox lag).",
    ["service"],
)
DEAD_LETTERED = Counter(
    "lengow_orders_dead_lettered_total",
    "Messages a consumer refused and sent to its dead-letter queue.",
    ["queue"],
)

BATCH_SIZE = Histogram(
    "lengow_orders_batch_size",
    "Deliveries handled together in one transaction by a batch consumer (its sum counts the"
    " deliveries).",
    ["queue"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)

DELIVERY_SECONDS = Histogram(
    "lengow_orders_delivery_seconds",
    "Time to handle one delivery of a queue consumed one delivery at a time outside FastStream,"
    " by outcome (handled, dead_lettered, retried).",
    ["queue", "outcome"],
)


def consumer_check(consuming: Callable[[], bool], queue: str) -> Check:
    """Ready only while the broker hands the queue's consumer deliveries."""

    async def check() -> None:
        if not consuming():
            raise ConnectionError(f"not consuming {queue}")

    return check


def prometheus_middleware(service: str) -> RabbitPrometheusMiddleware:
    return RabbitPrometheusMiddleware(registry=REGISTRY, app_name=service)


def broker_check(broker: RabbitBroker) -> Check:
    async def check() -> None:
        if not await broker.ping(timeout=3.0):
            raise ConnectionError("RabbitMQ does not answer")

    return check


def database_check(pool: Callable[[], asyncpg.Pool]) -> Check:
    async def check() -> None:
        async with asyncio.timeout(3.0):
            await pool().fetchval("SELECT 1")

    return check


async def refresh_outbox_metrics(pool: asyncpg.Pool, service: str) -> None:
    row = await pool.fetchrow(
        "SELECT count(*) AS pending, extract(epoch FROM now() - min(created_at)) AS oldest"
        " FROM outbox WHERE published_at IS NULL"
    )
    if row is not None:
        OUTBOX_PENDING.labels(service).set(row["pending"])
        OUTBOX_OLDEST_SECONDS.labels(service).set(float(row["oldest"] or 0.0))


class OpsServer:
    """Health and metrics over HTTP, plus a periodic refresh of gauges read from the database."""

    def __init__(
        self,
        service: str,
        host: str,
        port: int,
        checks: Mapping[str, Check],
        refresh: Check | None = None,
        refresh_every: float = 10.0,
    ) -> None:
        self.service = service
        self._host = host
        self._port = port
        self._checks = checks
        self._refresh = refresh
        self._refresh_every = refresh_every
        self._runner: web.AppRunner | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._started = time.monotonic()
        self.port: int | None = None

    async def live(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "service": self.service,
                "uptime_seconds": round(time.monotonic() - self._started, 1),
            }
        )

    async def ready(self, _: web.Request) -> web.Response:
        failures: dict[str, str] = {}
        for name, check in self._checks.items():
            try:
                await check()
            except Exception as exc:
                failures[name] = f"{type(exc).__name__}: {exc}"
        if failures:
            return web.json_response(
                {"status": "unavailable", "service": self.service, "failures": failures},
                status=503,
            )
        return web.json_response(
            {"status": "ok", "service": self.service, "checks": sorted(self._checks)}
        )

    async def metrics(self, _: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/health/live", self.live)
        app.router.add_get("/health/ready", self.ready)
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if self._refresh is not None:
            self._refresher = asyncio.create_task(self._refresh_loop(), name="metrics-refresh")
        log.info(
            "ops.listening",
            url=f"http://{self._host}:{self.port}",
            routes=["/health/live", "/health/ready", "/metrics"],
        )

    async def _refresh_loop(self) -> None:
        assert self._refresh is not None
        while True:
            try:
                await self._refresh()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("ops.metrics_refresh_failed", error=str(exc))
            await asyncio.sleep(self._refresh_every)

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._runner is not None:
            await self._runner.cleanup()

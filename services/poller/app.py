"""The poller's FastStream application: the schedule, the ``poller.sync`` command, wiring."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
from faststream import AckPolicy, FastStream
from faststream.rabbit.annotations import RabbitMessage

from services.poller import schedule
from services.poller.gateway import ActionGateway
from services.poller.lengow import LengowClient
from services.poller.repository import PollerRepository
from services.poller.settings import LengowSource, PollerSettings
from services.poller.sync import OrderSync
from shared.amqp import AmqpPublisher
from shared.contracts import Envelope, EventType, OrderActionRequested, SyncOrders
from shared.database import create_pool, migrate_dsn
from shared.logging import configure_logging, get_logger
from shared.messaging import Consumer, OutboxRelay, UnprocessableMessageError, raw_body
from shared.service import outbox_relay, service_app, service_broker, service_ops
from shared.topology import (
    COMMANDS,
    EVENTS,
    consumer_queue,
    declare_topology,
    document_events,
)

log = get_logger("services.poller")


class Poller:
    """The running poller: broker, database pool, Lengow clients and the schedule."""

    def __init__(self, settings: PollerSettings) -> None:
        self.settings = settings
        self.broker = service_broker("poller", settings)
        self.publisher = AmqpPublisher(settings.amqp_url.get_secret_value())
        document_events(
            self.broker,
            EventType.ORDER_CHANGED,
            EventType.ORDER_ACTION_SUCCEEDED,
            EventType.ORDER_ACTION_FAILED,
        )
        self.sync_queue = consumer_queue("poller.sync")
        self.actions_queue = consumer_queue("poller.action-requested")
        self._pool: asyncpg.Pool | None = None
        self._sync: OrderSync | None = None
        self._gateway: ActionGateway | None = None
        self._relay: OutboxRelay | None = None
        self._clients: dict[str, LengowClient] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.ops = service_ops("poller", settings, settings.poller_ops_port, self.broker, self.pool)
        consumer = Consumer(self.publisher, self.sync_queue, retry_delay=settings.retry_delay)
        action_consumer = Consumer(
            self.publisher, self.actions_queue, retry_delay=settings.retry_delay
        )

        @self.broker.subscriber(
            self.actions_queue,
            EVENTS,
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,
            decoder=raw_body,
            title="poller.action-requested",
            description="Sends each requested marketplace action to Lengow, once.",
        )
        async def on_action_requested(message: RabbitMessage) -> None:
            await action_consumer.run(
                message, Envelope[OrderActionRequested], self.gateway.on_action_requested
            )

        @self.broker.subscriber(
            self.sync_queue,
            COMMANDS,
            ack_policy=AckPolicy.MANUAL,
            no_reply=True,  # answers go through the outbox, never as a framework reply
            decoder=raw_body,
            title="poller.sync",
            description="Polls Lengow now, outside the schedule (ops).",
        )
        async def on_sync(message: RabbitMessage) -> None:
            await consumer.run(message, Envelope[SyncOrders], self.sync_now)

    @property
    def gateway(self) -> ActionGateway:
        if self._gateway is None:
            raise RuntimeError("the poller is not started")
        return self._gateway

    @property
    def relay(self) -> OutboxRelay:
        if self._relay is None:
            raise RuntimeError("the poller is not started")
        return self._relay

    @property
    def sync(self) -> OrderSync:
        if self._sync is None:
            raise RuntimeError("the poller is not started")
        return self._sync

    async def open(self) -> None:
        settings = self.settings
        if not settings.lengow_sources:
            raise RuntimeError(
                "LENGOW_SOURCES is empty: set it to a JSON list of"
                ' {"name", "account_id", "marketplace", "access_token", "secret"}'
            )
        dsn = settings.database_url.get_secret_value()
        await migrate_dsn(dsn, settings.poller_db_schema, "services.poller")
        self._pool = await create_pool(
            dsn, settings.poller_db_schema, max_size=settings.poller_db_pool_size
        )
        self._clients = {
            source.name: LengowClient(
                settings.lengow_api_url,
                source.access_token,
                source.secret,
                timeout=settings.lengow_timeout_seconds,
                max_attempts=settings.lengow_max_attempts,
                backoff_seconds=settings.lengow_backoff_seconds,
            )
            for source in settings.lengow_sources
        }
        polls = PollerRepository(self._pool)
        self._sync = OrderSync(settings, polls, self._clients, self.publish)
        self._relay = await outbox_relay(self._pool, self.publisher, settings)
        self._gateway = ActionGateway(settings, self._pool, polls, self._clients, self._relay.wake)

    async def started(self) -> None:
        await declare_topology(self.broker)
        self.relay.start()
        await self.ops.start()
        self._tasks = [
            asyncio.create_task(self.run_schedule(), name="poll-schedule"),
            asyncio.create_task(self.run_action_checks(), name="action-checks"),
        ]
        log.info(
            "poller.started",
            sources=[s.name for s in self.settings.lengow_sources],
            interval_seconds=self.settings.poll_interval_seconds,
        )

    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the poller is not started")
        return self._pool

    async def close(self) -> None:
        await self.ops.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._relay is not None:
            await self._relay.stop()
        await self.publisher.close()
        for client in self._clients.values():
            await client.aclose()
        if self._pool is not None:
            await self._pool.close()
        log.info("poller.stopped")

    async def publish(self, envelope: Envelope[Any]) -> None:
        """Publish a persistent event and wait for the broker's confirm."""
        await self.publisher.publish(
            EVENTS.name,
            envelope.type,
            envelope.model_dump_json().encode(),
            message_id=str(envelope.id),
            correlation_id=envelope.correlation_id,
        )

    async def run_schedule(self) -> None:
        """Every ``poll_interval_seconds``: each source's incremental poll, and the daily
        catch-up once it is due. A failure is logged and the next round tries again."""
        while True:
            for source in self.settings.lengow_sources:
                await self._guarded(self.sync.incremental(source))
                await self._guarded(self.sync.catchup_if_due(source))
            await asyncio.sleep(self.settings.poll_interval_seconds)

    async def run_action_checks(self) -> None:
        """Every ``action_check_interval_seconds``: the verdict of the actions sent."""
        while True:
            await asyncio.sleep(self.settings.action_check_interval_seconds)
            await self._guarded(self.gateway.check_sent())

    async def _guarded(self, poll: Any) -> Any:
        try:
            report = await poll
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("poller.task_failed")
            return None
        return report

    def sources(self, name: str | None) -> list[LengowSource]:
        found = [s for s in self.settings.lengow_sources if name in (None, s.name)]
        if not found:
            raise UnprocessableMessageError(f"no Lengow source named {name!r}")
        return found

    async def sync_now(self, envelope: Envelope[SyncOrders]) -> None:
        command = envelope.data
        for source in self.sources(command.source):
            if command.updated_from is not None:
                window = schedule.Window(
                    command.updated_from, command.updated_to or datetime.now(UTC)
                )
                await self.sync.poll(source, "manual", window)
            elif command.catchup:
                await self.sync.catchup(source)
            else:
                await self.sync.incremental(source)


def create_app(settings: PollerSettings | None = None) -> FastStream:
    settings = settings or PollerSettings()
    configure_logging(settings.log_level, settings.log_format)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    return service_app("poller", Poller(settings))

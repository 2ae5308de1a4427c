"""What every service's wiring has in common: its broker, its ops server, its FastStream app."""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar, overload

import asyncpg
import uvloop
from faststream import AckPolicy, FastStream
from faststream.rabbit import Channel, RabbitBroker, RabbitQueue
from faststream.rabbit.annotations import RabbitMessage
from pydantic import BaseModel

from shared.access import EMITS
from shared.amqp import AmqpPublisher
from shared.command_entry import CommandEntry
from shared.command_intake import read_command, read_reply_address
from shared.consumers import QueueConsumer, SubscriberSettler
from shared.contracts import Envelope
from shared.database import create_pool, migrate_dsn
from shared.observability import (
    Check,
    OpsServer,
    broker_check,
    consumer_check,
    database_check,
    prometheus_middleware,
    refresh_outbox_metrics,
)
from shared.outbox import OutboxRelay
from shared.retention import Pruner, RetentionRule
from shared.settings import ServiceSettings
from shared.settlement import RedeliveryBackoff
from shared.topology import CONSUMERS, declare_topology, described_consumer, document_events

ModelT = TypeVar("ModelT", bound=BaseModel)
PartT = TypeVar("PartT")
SettingsT = TypeVar("SettingsT", bound=ServiceSettings)


class NotStartedError(RuntimeError):
    """A service's part was used before the service made it, at start."""


class StartedPart(Generic[PartT]):
    """A part a service makes when it opens (its pool, its outbox relay, its handlers),
    declared on the service's class: read before it is made, it raises
    :class:`NotStartedError`, said here once instead of by a guard per part and service."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, service: None, owner: type) -> Self: ...

    @overload
    def __get__(self, service: object, owner: type) -> PartT: ...

    def __get__(self, service: object | None, owner: type) -> Self | PartT:
        if service is None:
            return self
        try:
            part: PartT = vars(service)[self._name]
        except KeyError:
            raise NotStartedError(
                f"{type(service).__name__} is not started: its {self._name} is made at start"
            ) from None
        return part

    def __set__(self, service: object, part: PartT) -> None:
        vars(service)[self._name] = part


def service_broker(service: str, settings: ServiceSettings) -> RabbitBroker:
    return RabbitBroker(
        settings.amqp_url.get_secret_value(),
        default_channel=Channel(prefetch_count=settings.prefetch_count),
        logger=logging.getLogger(f"faststream.{service}"),
        # One line per message received/processed is for debugging, not for production.
        log_level=logging.DEBUG,
        middlewares=[prometheus_middleware(service)],
    )


def service_publisher(settings: ServiceSettings) -> AmqpPublisher:
    return AmqpPublisher(
        settings.amqp_url.get_secret_value(), confirm_timeout=settings.publish_confirm_timeout
    )


async def outbox_relay(
    pool: asyncpg.Pool, publisher: AmqpPublisher, settings: ServiceSettings
) -> OutboxRelay:
    """Connect the service's publisher and give it the outbox relay (which publishes once
    started)."""
    await publisher.connect()
    return OutboxRelay(
        pool,
        publisher,
        poll_interval=settings.outbox_poll_interval,
        batch_size=settings.outbox_batch_size,
        # Long enough that a publish still waiting for its confirms keeps its rows.
        claim_seconds=4 * settings.publish_confirm_timeout,
    )


def service_ops(
    service: str,
    settings: ServiceSettings,
    port: int,
    broker: RabbitBroker,
    pool: Callable[[], asyncpg.Pool],
    refresh: Callable[[], Awaitable[None]] | None = None,
    consumer: QueueConsumer | None = None,
    checks: dict[str, Check] | None = None,
) -> OpsServer:
    """Health (broker and database reachable, and the service's directly consumed queue
    being consumed) and metrics; by default the refreshed gauges are the outbox's."""
    every: dict[str, Check] = {
        "rabbitmq": broker_check(broker),
        "postgresql": database_check(pool),
        **(checks or {}),
    }
    if consumer is not None:
        every[consumer.queue] = consumer_check(lambda: consumer.consuming, consumer.queue)
    return OpsServer(
        service,
        settings.ops_host,
        port,
        checks=every,
        refresh=refresh or (lambda: refresh_outbox_metrics(pool(), service)),
    )


def envelope_subscriber(
    broker: RabbitBroker,
    publisher: AmqpPublisher,
    queue: RabbitQueue,
    model: type[Envelope[ModelT]],
    handler: Callable[[Envelope[ModelT]], Awaitable[None]],
    *,
    backoff: RedeliveryBackoff,
    description: str,
) -> SubscriberSettler:
    """A FastStream subscriber of ``queue`` that parses each delivery as ``model`` and settles
    it by the one rule of :mod:`shared.settlement` (answers go through the outbox, never as a
    framework reply). The caller stops the returned settler when the service stops."""
    consumer = SubscriberSettler(publisher, queue, backoff=backoff)

    @settled_subscriber(broker, queue, description)
    async def on_message(message: RabbitMessage) -> None:
        await consumer.run(message, model, handler)

    return consumer


def settled_subscriber(
    broker: RabbitBroker, queue: RabbitQueue, description: str
) -> Callable[[Callable[[RabbitMessage], Awaitable[None]]], Any]:
    """FastStream's subscriber of one of the pipeline's queues, on its exchange, for a handler
    that settles each delivery itself (manual acks, the raw body, no framework reply)."""
    exchange = CONSUMERS[queue.name].exchange
    return broker.subscriber(
        queue,
        exchange,
        ack_policy=AckPolicy.MANUAL,
        no_reply=True,  # answers go through the outbox, never as a framework reply
        decoder=raw_body,
        title=queue.name,
        description=description,
    )


async def raw_body(message: RabbitMessage) -> bytes:
    """FastStream decoder that leaves the body alone: the settler parses it, so that a
    malformed body is dead-lettered with its reason rather than failing inside the framework."""
    return message.body


class Runtime(Protocol):
    broker: RabbitBroker

    async def open(self) -> None: ...

    async def started(self) -> None: ...

    async def close(self) -> None: ...


def command_subscriber(
    broker: RabbitBroker,
    publisher: AmqpPublisher,
    queue: RabbitQueue,
    entry: CommandEntry,
    *,
    backoff: RedeliveryBackoff,
    description: str,
) -> SubscriberSettler:
    """A FastStream subscriber of a command queue: each delivery read here (the command with
    who sent it, and apart from it where to answer), given to ``entry``
    (:mod:`shared.command_entry`) and settled by the one rule. The caller stops the settler."""
    consumer = SubscriberSettler(publisher, queue, backoff=backoff)

    @settled_subscriber(broker, queue, description)
    async def on_command(message: RabbitMessage) -> None:
        raw = message.raw_message

        async def handle(delivery: RabbitMessage) -> None:
            await entry(
                read_command(delivery.body, raw.user_id),
                read_reply_address(raw.reply_to, raw.correlation_id),
            )

        await consumer.run_raw(message, handle)

    return consumer


class ServiceRuntime(Generic[SettingsT]):
    """What every service's running process holds and does alike: its broker and publisher,
    its database (migrated, pooled) with the outbox relay and the retention pruner, made at
    start and stopped at close, in that order. A service subclasses it with its consumers
    and handlers, and names itself in ``name``."""

    name: ClassVar[str]
    pool = StartedPart[asyncpg.Pool]()
    relay = StartedPart[OutboxRelay]()
    pruner = StartedPart[Pruner]()

    def __init__(self, settings: SettingsT) -> None:
        self.settings = settings
        self.broker = service_broker(self.name, settings)
        self.publisher = service_publisher(settings)
        document_events(self.broker, *EMITS[self.name])

    async def open_database(self, schema: str, pool_size: int) -> asyncpg.Pool:
        """Migrate the service's schema, pool connections to it, and make the relay."""
        dsn = self.settings.database_url.get_secret_value()
        await migrate_dsn(dsn, schema, f"services.{self.name}")
        self.pool = pool = await create_pool(dsn, schema, max_size=pool_size)
        self.relay = await outbox_relay(pool, self.publisher, self.settings)
        return pool

    async def start_messaging(self, retention: Sequence[RetentionRule] = ()) -> None:
        """Declare the topology, then start the relay and the pruner of the messaging tables
        and of ``retention``'s."""
        await declare_topology(self.broker)
        self.relay.start()
        rules = [*self.settings.messaging_retention(), *retention]
        self.pruner = Pruner(
            self.pool, self.name, rules, interval=self.settings.prune_interval_seconds
        )
        self.pruner.start()

    async def close_messaging(self) -> None:
        """Stop what :meth:`start_messaging` and :meth:`open_database` started, those that
        were."""
        with suppress(NotStartedError):
            await self.pruner.stop()
        with suppress(NotStartedError):
            await self.relay.stop()
        await self.publisher.close()
        with suppress(NotStartedError):
            await self.pool.close()

    def described_queue(
        self, queue: RabbitQueue, model: type[Envelope[Any]], description: str
    ) -> RabbitBroker:
        """For the AsyncAPI document: a queue consumed outside FastStream."""
        return described_consumer(
            self.settings.amqp_url.get_secret_value(), queue, model, description
        )


def service_app(service: str, runtime: Runtime) -> FastStream:
    """Open (migrate, connect) before consuming; close after the broker stopped consuming and
    finished what was in flight. ``app.context`` holds the runtime under the service's name."""
    app = FastStream(runtime.broker, logger=logging.getLogger(f"faststream.{service}"))
    app.on_startup(runtime.open)
    app.after_startup(runtime.started)
    app.after_shutdown(runtime.close)
    app.context.set_global(service, runtime)
    return app


def run_service(create_app: Callable[[], FastStream]) -> None:
    """``python -m services.<name>``: run the app until SIGINT/SIGTERM."""
    app = create_app()
    _collect_garbage_less_often()
    # uvloop: the same asyncio, with the network paths in C (measured: about 10 % more
    # throughput for the processor).
    uvloop.run(app.run())


#: Allocations between two young-generation collections (CPython's default: 700).
YOUNG_COLLECTION_THRESHOLD = 50_000


def _collect_garbage_less_often() -> None:
    """Handling one order allocates hundreds of objects, so the default collector ran every
    few orders, over everything still alive in the batch: a fifth of the processor's time
    (measured: 330 µs of CPU an event, 275 µs with this). What start-up loaded is set aside
    for good, and the young generation is collected every 50,000 allocations."""
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, 10, 10)

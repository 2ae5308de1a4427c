"""The poller's FastStream application: the schedule, the ``poller.sync`` command, wiring."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from faststream import FastStream
from faststream.rabbit import RabbitBroker, RabbitQueue

from services.poller import schedule
from services.poller.gateway import ActionGateway
from services.poller.imports import ImportMarker
from services.poller.lengow import LengowClient, RateBudget
from services.poller.marketplaces import MarketplaceRulesReader
from services.poller.repository import (
    ImportRepository,
    PollerRepository,
    PostgresActionStore,
    poller_retention,
)
from services.poller.settings import LengowSource, PollerSettings
from services.poller.sync import OrderSync
from shared.consumers import BatchConsumer, SubscriberSettler
from shared.contracts import (
    Envelope,
    OrderActionRequested,
    OrderLinkRequested,
    OrderStatusChanged,
    SyncOrders,
)
from shared.logging import configure_logging, get_logger
from shared.service import (
    ServiceRuntime,
    StartedPart,
    envelope_subscriber,
    service_app,
    service_ops,
)
from shared.settlement import UnprocessableMessageError
from shared.topology import (
    EVENTS,
    POLLER_ACTION_REQUESTED,
    POLLER_ORDER_LINKED,
    POLLER_ORDER_RECORDED,
    POLLER_SYNC,
    consumer_queue,
)

log = get_logger("services.poller")

#: An action request may wait this long for Lengow's budget and answers before the consumer
#: counts as stuck.
ACTION_STALL_SECONDS = 120.0


class Poller(ServiceRuntime[PollerSettings]):
    """The running poller: its Lengow clients, the schedule, the gateway and its consumers."""

    name = "poller"
    sync = StartedPart[OrderSync]()
    gateway = StartedPart[ActionGateway]()
    imports = StartedPart[ImportMarker]()
    rules = StartedPart[MarketplaceRulesReader]()

    def __init__(self, settings: PollerSettings) -> None:
        super().__init__(settings)
        self.sync_queue = consumer_queue(POLLER_SYNC)
        self.actions_queue = consumer_queue(POLLER_ACTION_REQUESTED)
        self.recorded_queue = consumer_queue(POLLER_ORDER_RECORDED)
        self.linked_queue = consumer_queue(POLLER_ORDER_LINKED)
        self.budget = RateBudget(
            settings.lengow_calls_per_minute, settings.lengow_budget_window_seconds
        )
        self._clients: dict[str, LengowClient] = {}
        self._tasks: list[asyncio.Task[None]] = []
        #: Polls are overdue counting from here until each source's first one ends.
        self._started_at = time.monotonic()

        self._settlers: list[SubscriberSettler] = []
        # As many order.status_changed as orders in a catch-up: consumed in batches.
        self.recorded = BatchConsumer(
            settings.amqp_url.get_secret_value(),
            self.recorded_queue,
            Envelope[OrderStatusChanged],
            lambda envelopes: self.imports.on_orders_recorded(envelopes),
            self.publisher,
            prefetch=1000,
            max_batch=500,
            backoff=settings.redelivery_backoff,
        )
        self.ops = service_ops(
            "poller",
            settings,
            settings.poller_ops_port,
            self.broker,
            lambda: self.pool,
            checks={"polls": self.polls_check, "actions": self.actions_check},
            consumer=self.recorded,
        )
        self._subscribe(
            self.linked_queue,
            Envelope[OrderLinkRequested],
            lambda envelope: self.imports.on_link_requested(envelope),
            "Writes the merchant order id an order.link command gave back to Lengow.",
        )
        self._subscribe(
            self.actions_queue,
            Envelope[OrderActionRequested],
            lambda envelope: self.gateway.on_action_requested(envelope),
            "Sends each requested marketplace action to Lengow, once.",
        )
        self._subscribe(
            self.sync_queue,
            Envelope[SyncOrders],
            self.sync_now,
            "Polls Lengow now, outside the schedule (ops).",
        )

    def _subscribe(
        self,
        queue: RabbitQueue,
        model: Any,
        handler: Callable[[Any], Awaitable[None]],
        description: str,
    ) -> None:
        """A queue of single envelopes, settled by the one rule; stopped at close."""
        settler = envelope_subscriber(
            self.broker,
            self.publisher,
            queue,
            model,
            handler,
            backoff=self.settings.redelivery_backoff,
            description=description,
        )
        self._settlers.append(settler)

    async def open(self) -> None:
        settings = self.settings
        if not settings.lengow_sources:
            raise RuntimeError(
                "LENGOW_SOURCES is empty: set it to a JSON list of"
                ' {"name", "account_id", "marketplace", "access_token", "secret"}'
            )
        pool = await self.open_database(settings.poller_db_schema, settings.poller_db_pool_size)
        relay = self.relay
        self._clients = {
            source.name: LengowClient(
                settings.lengow_api_url,
                source.access_token,
                source.secret,
                budget=self.budget,
                timeout=settings.lengow_timeout_seconds,
                max_attempts=settings.lengow_max_attempts,
                backoff_seconds=settings.lengow_backoff_seconds,
            )
            for source in settings.lengow_sources
        }
        self.sync = OrderSync(settings, PollerRepository(pool), self._clients, self.publish)
        self.rules = rules = MarketplaceRulesReader(settings, pool, self._clients, relay.wake)
        self.gateway = ActionGateway(
            settings, PostgresActionStore(pool, relay.wake), self._clients, rules.refresh_soon
        )
        self.imports = ImportMarker(settings, ImportRepository(pool), self._clients)

    async def started(self) -> None:
        await self.start_messaging(
            poller_retention(
                poll_runs=timedelta(days=self.settings.poll_runs_retention_days),
                personal_data=timedelta(days=self.settings.personal_data_retention_days),
            )
        )
        await self.recorded.start()
        await self.ops.start()
        self._started_at = time.monotonic()
        self._tasks = [
            *(
                asyncio.create_task(self.run_schedule(source), name=f"polls:{source.name}")
                for source in self.settings.lengow_sources
            ),
            *(
                asyncio.create_task(self.rules.run(source), name=f"rules:{source.name}")
                for source in self.settings.lengow_sources
            ),
            asyncio.create_task(self.run_action_checks(), name="action-checks"),
            asyncio.create_task(self.run_import_marking(), name="import-marking"),
        ]
        log.info(
            "poller.started",
            sources=[s.name for s in self.settings.lengow_sources],
            interval_seconds=self.settings.poll_interval_seconds,
        )

    def described(self) -> RabbitBroker:
        return self.described_queue(
            self.recorded_queue,
            Envelope[OrderStatusChanged],
            "Marks each order the processor recorded as imported at Lengow (PATCH"
            " /v3.0/orders/moi/); consumed in batches.",
        )

    async def close(self) -> None:
        await self.ops.stop()
        await self.recorded.stop()
        for settler in self._settlers:
            await settler.stop()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for client in self._clients.values():
            await client.aclose()
        await self.close_messaging()
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

    async def run_schedule(self, source: LengowSource) -> None:
        """Every ``poll_interval_seconds``: the source's incremental poll, and its daily
        catch-up once due. Each source has its own schedule, so one source's long catch-up
        never holds back another's poll. A failure is logged and the next round tries again."""
        while True:
            await self._guarded(self.sync.incremental(source))
            await self._guarded(self.sync.catchup_if_due(source))
            await asyncio.sleep(self.settings.poll_interval_seconds)

    async def run_action_checks(self) -> None:
        """Every ``action_check_interval_seconds``: sends left to do, doubts to resolve,
        verdicts to read."""
        while True:
            await asyncio.sleep(self.settings.action_check_interval_seconds)
            await self._guarded(self.gateway.follow_up())

    async def run_import_marking(self) -> None:
        """Orders recorded by the processor are marked imported at Lengow."""
        while True:
            await self._guarded(self.imports.run())
            await asyncio.sleep(self.settings.retry_delay)

    async def polls_check(self) -> None:
        """Not ready when a source's poll is overdue by two intervals (its schedule is stuck:
        a poll that fails still ends and counts)."""
        limit = 2 * self.settings.poll_interval_seconds + self.settings.lengow_timeout_seconds
        now = time.monotonic()
        for source in self.settings.lengow_sources:
            last = self.sync.last_finished.get(source.name, self._started_at)
            if now - last > limit:
                raise TimeoutError(f"the poll of {source.name} is overdue ({now - last:.0f} s)")

    async def actions_check(self) -> None:
        """Not ready when the action consumer holds deliveries and has made no progress."""
        stalled = self.gateway.progress.stalled_for()
        if stalled > ACTION_STALL_SECONDS + self.settings.lengow_timeout_seconds:
            raise TimeoutError(f"no action request handled for {stalled:.0f} s")

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

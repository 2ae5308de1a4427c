"""The processor's FastStream application: wiring only, the work is in ``order_changes`` and
``command_handler``."""

from __future__ import annotations

from datetime import timedelta

from faststream import FastStream
from faststream.rabbit import RabbitBroker

from services.processor.command_handler import (
    SOURCE,
    CommandHandler,
    record_action_failure,
    store_marketplace_rules,
)
from services.processor.deadline_watch import DeadlineWatch
from services.processor.metrics import ORDERS_BY_STATUS
from services.processor.order_changes import handle_order_changes
from services.processor.repository import ProcessorUnitOfWork, personal_data_rule
from services.processor.settings import ProcessorSettings
from shared.command_entry import answered_in_its_transaction
from shared.consumers import BatchConsumer
from shared.contracts import (
    Envelope,
    MarketplaceRulesChanged,
    OrderActionFailed,
    OrderSnapshot,
)
from shared.logging import configure_logging, get_logger
from shared.observability import (
    refresh_outbox_metrics,
)
from shared.service import (
    ServiceRuntime,
    command_subscriber,
    envelope_subscriber,
    service_app,
    service_ops,
)
from shared.topology import (
    PROCESSOR_ACTION_FAILED,
    PROCESSOR_COMMANDS,
    PROCESSOR_MARKETPLACE_RULES,
    PROCESSOR_ORDER_CHANGED,
    consumer_queue,
)

log = get_logger("services.processor")


class Processor(ServiceRuntime[ProcessorSettings]):
    """The running processor: its consumers, the command handler and the deadline watch."""

    name = "processor"

    def __init__(self, settings: ProcessorSettings) -> None:
        super().__init__(settings)
        self.order_changed_queue = consumer_queue(PROCESSOR_ORDER_CHANGED)
        self.commands_queue = consumer_queue(PROCESSOR_COMMANDS)
        self.rules_queue = consumer_queue(PROCESSOR_MARKETPLACE_RULES)
        self.failures_queue = consumer_queue(PROCESSOR_ACTION_FAILED)
        # The bulk of the traffic: consumed in batches on aio-pika (see shared/consumers.py),
        # twice the batch in flight so that the next batch gathers while one commits.
        self.order_changes = BatchConsumer(
            settings.amqp_url.get_secret_value(),
            self.order_changed_queue,
            Envelope[OrderSnapshot],
            lambda envelopes: handle_order_changes(
                self.unit_of_work,
                envelopes,
                timedelta(hours=settings.acceptance_delay_hours),
            ),
            self.publisher,
            prefetch=2 * settings.processor_batch_size,
            max_batch=settings.processor_batch_size,
            backoff=settings.redelivery_backoff,
        )
        self.ops = service_ops(
            "processor",
            settings,
            settings.processor_ops_port,
            self.broker,
            lambda: self.pool,
            self.refresh_metrics,
            consumer=self.order_changes,
        )
        command_handler = CommandHandler(
            carriers=settings.marketplace_carriers,
            refund_reasons=settings.marketplace_refund_reasons,
            senders=settings.command_senders,
        )
        command_consumer = command_subscriber(
            self.broker,
            self.publisher,
            self.commands_queue,
            answered_in_its_transaction(self.unit_of_work, command_handler.handle, SOURCE),
            backoff=settings.redelivery_backoff,
            description=(
                "Checks order.accept, order.refuse, order.ship and order.refund against the"
                " order's status, answers command.accepted or command.rejected (also to"
                " reply_to), and asks the gateway for the marketplace action."
            ),
        )

        rules = envelope_subscriber(
            self.broker,
            self.publisher,
            self.rules_queue,
            Envelope[MarketplaceRulesChanged],
            lambda envelope: store_marketplace_rules(self.unit_of_work, envelope),
            backoff=settings.redelivery_backoff,
            description="Keeps each marketplace's rules (Lengow's marketplaces document).",
        )
        failures = envelope_subscriber(
            self.broker,
            self.publisher,
            self.failures_queue,
            Envelope[OrderActionFailed],
            lambda envelope: record_action_failure(self.unit_of_work, envelope),
            backoff=settings.redelivery_backoff,
            description="Frees an order's ship or refund once the marketplace refused it.",
        )
        self._settlers = (command_consumer, rules, failures)
        self.deadlines = DeadlineWatch(
            self.unit_of_work,
            lead=timedelta(hours=settings.deadline_lead_hours),
            interval=settings.deadline_check_seconds,
        )

    def described(self) -> RabbitBroker:
        return self.described_queue(
            self.order_changed_queue,
            Envelope[OrderSnapshot],
            "Applies each observed order snapshot to the order's lifecycle; deliveries are"
            " committed and acknowledged in batches.",
        )

    def unit_of_work(self) -> ProcessorUnitOfWork:
        return ProcessorUnitOfWork(self.pool, self.relay.wake)

    async def open(self) -> None:
        """Migrate and connect, before the broker starts consuming."""
        settings = self.settings
        await self.open_database(settings.processor_db_schema, settings.processor_db_pool_size)

    async def started(self) -> None:
        personal_data = timedelta(days=self.settings.personal_data_retention_days)
        await self.start_messaging([personal_data_rule(personal_data)])
        await self.order_changes.start()
        self.deadlines.start()
        await self.ops.start()
        log.info("processor.started", schema=self.settings.processor_db_schema)

    async def refresh_metrics(self) -> None:
        await refresh_outbox_metrics(self.pool, "processor")
        rows = await self.pool.fetch("SELECT lengow_status, count(*) AS n FROM orders GROUP BY 1")
        for row in rows:
            ORDERS_BY_STATUS.labels(row["lengow_status"]).set(row["n"])
        async with self.unit_of_work() as uow:
            await self.deadlines.refresh_metrics(uow)

    async def close(self) -> None:
        await self.ops.stop()
        await self.order_changes.stop()
        await self.deadlines.stop()
        for settler in self._settlers:
            await settler.stop()
        await self.close_messaging()
        log.info("processor.stopped")


def create_app(settings: ProcessorSettings | None = None) -> FastStream:
    settings = settings or ProcessorSettings()
    configure_logging(settings.log_level, settings.log_format)
    return service_app("processor", Processor(settings))

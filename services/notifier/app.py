"""The notifier's FastStream application: wiring only, the work is in ``handlers``."""

from __future__ import annotations

import asyncpg
from faststream import FastStream
from faststream.rabbit import RabbitBroker

from services.notifier.commands import InvoiceCommandHandler
from services.notifier.handlers import InvoiceService
from services.notifier.mailer import InvoiceMailer
from services.notifier.rendering import InvoiceRenderer
from services.notifier.repository import NotifierUnitOfWork
from services.notifier.settings import NotifierSettings
from shared.access import EMITS
from shared.consumers import ConcurrentConsumer
from shared.contracts import Envelope, OrderRefunded, OrderShipped
from shared.database import create_pool, migrate_dsn
from shared.logging import configure_logging, get_logger
from shared.outbox import OutboxRelay
from shared.retention import Pruner
from shared.service import (
    command_subscriber,
    envelope_subscriber,
    outbox_relay,
    service_app,
    service_broker,
    service_ops,
    service_publisher,
)
from shared.topology import (
    NOTIFIER_COMMANDS,
    NOTIFIER_ORDER_REFUNDED,
    NOTIFIER_ORDER_SHIPPED,
    consumer_queue,
    declare_topology,
    described_consumer,
    document_events,
)

log = get_logger("services.notifier")


class Notifier:
    """The running notifier: broker, database pool, outbox relay and invoice service."""

    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.broker = service_broker("notifier", settings)
        self.publisher = service_publisher(settings)
        document_events(self.broker, *EMITS["notifier"])
        self.order_shipped_queue = consumer_queue(NOTIFIER_ORDER_SHIPPED)
        self.order_refunded_queue = consumer_queue(NOTIFIER_ORDER_REFUNDED)
        self.commands_queue = consumer_queue(NOTIFIER_COMMANDS)
        self._commands: InvoiceCommandHandler | None = None
        self._pool: asyncpg.Pool | None = None
        self._relay: OutboxRelay | None = None
        self._pruner: Pruner | None = None
        self._service: InvoiceService | None = None
        self.mailer = InvoiceMailer(settings)
        # The bulk of the notifier's traffic: consumed on aiormq's channel directly (see
        # shared/consumers.py), each invoice on its own, up to PREFETCH_COUNT at once.
        self.orders_shipped = ConcurrentConsumer(
            settings.amqp_url.get_secret_value(),
            self.order_shipped_queue,
            Envelope[OrderShipped],
            lambda envelope: self.service.on_order_shipped(envelope),
            self.publisher,
            prefetch=settings.prefetch_count,
            backoff=settings.redelivery_backoff,
        )
        self.refunds = envelope_subscriber(
            self.broker,
            self.publisher,
            self.order_refunded_queue,
            Envelope[OrderRefunded],
            lambda envelope: self.service.on_order_refunded(envelope),
            backoff=settings.redelivery_backoff,
            description="Issues a credit note for each refund of an invoiced order, and emails"
            " it, once per refund.",
        )
        self.commands = command_subscriber(
            self.broker,
            self.publisher,
            self.commands_queue,
            lambda received: self.command_handler.handle(received),
            backoff=settings.redelivery_backoff,
            description="Obeys invoice.release, invoice.send and invoice.resend, each command_id"
            " once, and answers command.accepted or command.rejected (also to reply_to).",
        )
        self.ops = service_ops(
            "notifier",
            settings,
            settings.notifier_ops_port,
            self.broker,
            lambda: self.pool,
            consumer=self.orders_shipped,
        )

    def described(self) -> RabbitBroker:
        """For the AsyncAPI document: the queue consumed outside FastStream."""
        return described_consumer(
            self.settings.amqp_url.get_secret_value(),
            self.order_shipped_queue,
            Envelope[OrderShipped],
            "Issues the customer's invoice and emails it, once per order.",
        )

    @property
    def service(self) -> InvoiceService:
        if self._service is None:
            raise RuntimeError("the notifier is not started")
        return self._service

    @property
    def command_handler(self) -> InvoiceCommandHandler:
        if self._commands is None:
            raise RuntimeError("the notifier is not started")
        return self._commands

    @property
    def relay(self) -> OutboxRelay:
        if self._relay is None:
            raise RuntimeError("the notifier is not started")
        return self._relay

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the notifier is not started")
        return self._pool

    async def open(self) -> None:
        dsn = self.settings.database_url.get_secret_value()
        schema = self.settings.notifier_db_schema
        await migrate_dsn(dsn, schema, "services.notifier")
        self._pool = await create_pool(dsn, schema, max_size=self.settings.notifier_db_pool_size)
        self._relay = await outbox_relay(self._pool, self.publisher, self.settings)
        self._service = InvoiceService(
            self.settings,
            self._pool,
            self._relay.wake,
            self.mailer,
            InvoiceRenderer(),
        )
        relay = self._relay
        pool = self._pool
        self._commands = InvoiceCommandHandler(
            self._service,
            lambda: NotifierUnitOfWork(pool, relay.wake),
            self.settings.command_senders,
        )

    async def started(self) -> None:
        await declare_topology(self.broker)
        self.relay.start()
        self._pruner = Pruner(
            self.pool,
            "notifier",
            self.settings.messaging_retention(),
            interval=self.settings.prune_interval_seconds,
        )
        self._pruner.start()
        released = await self.service.recheck_holds()
        await self.orders_shipped.start()
        await self.ops.start()
        if self.settings.invoice_mode == "mandate":
            log.warning(
                "notifier.mandate",
                hint="INVOICE_MODE is mandate: ManoMano invoices on the seller's behalf, so this"
                " notifier issues no invoice and no credit note",
            )
        if set(self.settings.seller_siren) <= {"0"}:
            log.warning(
                "notifier.placeholder_seller",
                hint="invoices carry placeholder legal mentions: set SELLER_LEGAL_NAME,"
                " SELLER_ADDRESS, SELLER_SIREN, SELLER_SIRET and SELLER_VAT_NUMBER",
            )
        log.info(
            "notifier.started",
            smtp=f"{self.settings.smtp_host}:{self.settings.smtp_port}",
            language=self.settings.invoice_language,
            invoice_mode=self.settings.invoice_mode,
            vat_one_stop_shop=self.settings.vat_one_stop_shop,
            vat_default_rate=self.settings.vat_default_rate,
            held_invoices_released=released,
        )

    async def close(self) -> None:
        await self.ops.stop()
        await self.orders_shipped.stop()
        await self.refunds.stop()
        await self.commands.stop()
        await self.mailer.close()
        if self._pruner is not None:
            await self._pruner.stop()
        if self._relay is not None:
            await self._relay.stop()
        await self.publisher.close()
        if self._pool is not None:
            await self._pool.close()
        log.info("notifier.stopped")


def create_app(settings: NotifierSettings | None = None) -> FastStream:
    settings = settings or NotifierSettings()
    configure_logging(settings.log_level, settings.log_format)
    return service_app("notifier", Notifier(settings))

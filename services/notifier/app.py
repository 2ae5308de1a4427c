"""The notifier's FastStream application: wiring only, the work is in ``handlers``."""

from __future__ import annotations

from contextlib import suppress

from faststream import FastStream
from faststream.rabbit import RabbitBroker

from services.notifier.commands import SOURCE, InvoiceCommandHandler
from services.notifier.handlers import InvoiceService
from services.notifier.holds_recheck import HeldInvoicesRecheck
from services.notifier.mailer import InvoiceMailer
from services.notifier.rendering import InvoiceRenderer
from services.notifier.repository import PostgresNotifierStore
from services.notifier.settings import NotifierSettings
from shared.command_entry import CommandEntry, answered_after
from shared.consumers import ConcurrentConsumer
from shared.contracts import Envelope, OrderRefunded, OrderShipped
from shared.logging import configure_logging, get_logger
from shared.service import (
    NotStartedError,
    ServiceRuntime,
    StartedPart,
    command_subscriber,
    envelope_subscriber,
    service_app,
    service_ops,
)
from shared.topology import (
    NOTIFIER_COMMANDS,
    NOTIFIER_ORDER_REFUNDED,
    NOTIFIER_ORDER_SHIPPED,
    consumer_queue,
)

log = get_logger("services.notifier")


class Notifier(ServiceRuntime[NotifierSettings]):
    """The running notifier: its consumers, the invoice service and the command handler."""

    name = "notifier"
    service = StartedPart[InvoiceService]()
    #: The command queue's entry point, made once the database is open.
    command_entry = StartedPart[CommandEntry]()
    holds_recheck = StartedPart[HeldInvoicesRecheck]()

    def __init__(self, settings: NotifierSettings) -> None:
        super().__init__(settings)
        self.order_shipped_queue = consumer_queue(NOTIFIER_ORDER_SHIPPED)
        self.order_refunded_queue = consumer_queue(NOTIFIER_ORDER_REFUNDED)
        self.commands_queue = consumer_queue(NOTIFIER_COMMANDS)
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
            lambda received, address: self.command_entry(received, address),
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
        return self.described_queue(
            self.order_shipped_queue,
            Envelope[OrderShipped],
            "Issues the customer's invoice and emails it, once per order.",
        )

    async def open(self) -> None:
        settings = self.settings
        pool = await self.open_database(settings.notifier_db_schema, settings.notifier_db_pool_size)
        store = PostgresNotifierStore(pool, self.relay.wake)
        self.service = InvoiceService(self.settings, store, self.mailer, InvoiceRenderer())
        handler = InvoiceCommandHandler(self.service, store.work, self.settings.command_senders)
        self.command_entry = answered_after(store.work, handler.handle, SOURCE)

    async def started(self) -> None:
        await self.start_messaging()
        self.holds_recheck = HeldInvoicesRecheck(self.service)
        self.holds_recheck.start()
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
        )

    async def close(self) -> None:
        with suppress(NotStartedError):
            await self.holds_recheck.stop()
        await self.ops.stop()
        await self.orders_shipped.stop()
        await self.refunds.stop()
        await self.commands.stop()
        await self.mailer.close()
        await self.close_messaging()
        log.info("notifier.stopped")


def create_app(settings: NotifierSettings | None = None) -> FastStream:
    settings = settings or NotifierSettings()
    configure_logging(settings.log_level, settings.log_format)
    return service_app("notifier", Notifier(settings))

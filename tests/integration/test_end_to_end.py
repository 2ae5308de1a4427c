"""Sandbox -> poller -> RabbitMQ -> processor -> PostgreSQL (-> notifier -> SMTP)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

from sandbox.marketplace import now
from services.notifier.app import Notifier
from services.poller.app import Poller
from services.poller.app import create_app as poller_app
from services.processor.app import Processor
from shared.contracts import Envelope, LengowStatus, OrderStatusChanged
from tests.bus import delete_queues, request
from tests.conftest import SmtpSink
from tests.factories import encode, envelope
from tests.integration.conftest import POLLER_QUEUES, RunningSandbox, poller_settings

pytestmark = pytest.mark.integration


async def wait_until_stored(
    processor: Processor, db: asyncpg.Connection, expected: dict[str, str]
) -> dict[str, str]:
    stored: dict[str, str] = {}
    for _ in range(600):
        rows = await db.fetch("SELECT marketplace_order_id, lengow_status FROM orders")
        stored = {r["marketplace_order_id"]: r["lengow_status"] for r in rows}
        if stored == expected and await processor.relay.pending() == 0:
            return stored
        await asyncio.sleep(0.1)
    return stored


async def test_thousand_orders_reach_the_database_with_the_marketplace_status(
    sandbox: RunningSandbox,
    processor: Processor,
    db: asyncpg.Connection,
    poller_factory: Callable[..., Awaitable[Poller]],
) -> None:
    start = now() - timedelta(hours=5)
    for index in range(1000):
        sandbox.marketplace.create_order(
            at=start + timedelta(seconds=index),
            fulfillment=index % 9 == 0,
            missing_email=index % 13 == 0,
        )
    sandbox.marketplace.advance(now() - timedelta(hours=2), share=0.5)
    sandbox.marketplace.advance(now() - timedelta(hours=1), share=0.5)

    poller = await poller_factory(lengow_page_size=100)
    first = await poller.sync.incremental(poller.settings.lengow_sources[0])
    assert (first.fetched, first.published, first.error) == (1000, 1000, None)
    stored = await wait_until_stored(processor, db, sandbox.statuses())
    assert stored == sandbox.statuses()

    # Life goes on at the marketplace; the next poll carries only what changed.
    moved = sandbox.marketplace.advance(now() - timedelta(seconds=30), share=0.4)
    assert moved > 100
    second = await poller.sync.incremental(poller.settings.lengow_sources[0])
    assert second.published == moved
    stored = await wait_until_stored(processor, db, sandbox.statuses())
    assert stored == sandbox.statuses()

    # Every shipped order was announced, exactly once.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM orders WHERE lengow_status = 'shipped' AND NOT shipment_announced"
        )
        == 0
    )
    announcements = await db.fetch("SELECT body FROM outbox WHERE routing_key = 'order.shipped'")
    assert len(announcements) == await db.fetchval(
        "SELECT count(*) FROM orders WHERE shipment_announced"
    )
    assert len(announcements) > 100
    assert await db.fetchval("SELECT count(*) FROM order_transitions WHERE kind = 'rejected'") == 0
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0


async def test_every_shipped_order_gets_exactly_one_invoice_email(
    sandbox: RunningSandbox,
    processor: Processor,
    db: asyncpg.Connection,
    poller_factory: Callable[..., Awaitable[Poller]],
    notifier_factory: Callable[..., Awaitable[Notifier]],
    smtp_sink: SmtpSink,
) -> None:
    await notifier_factory()
    start = now() - timedelta(hours=3)
    for index in range(60):
        sandbox.marketplace.create_order(
            at=start + timedelta(seconds=index), fulfillment=index % 10 == 0
        )
    poller = await poller_factory()
    source = poller.settings.lengow_sources[0]
    await poller.sync.incremental(source)
    # Between polls orders move on, sometimes by several steps (shipped, then refunding).
    for _ in range(4):
        sandbox.marketplace.advance(now(), share=0.6)
        sandbox.marketplace.advance(now(), share=0.6)
        await poller.sync.incremental(source)
        await wait_until_stored(processor, db, sandbox.statuses())

    shipped = sorted(
        order.id
        for order in sandbox.marketplace.orders.values()
        if order.raw["packages"][0]["delivery"]["trackings"]
        and order.status in {"shipped", "refunding", "refunded"}
    )
    announced = await db.fetchval("SELECT count(*) FROM orders WHERE shipment_announced")
    assert announced == len(shipped)
    refunded = sorted(
        order_id
        for order_id in shipped
        if sandbox.marketplace.orders[order_id].status == "refunded"
    )
    expected = len(shipped) + len(refunded)  # an invoice each, and a credit note per refund
    for _ in range(300):
        if len(smtp_sink.messages()) >= expected:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # a second email, were one coming, would be here by now
    everything = smtp_sink.messages()
    mails = [m for m in everything if m["X-Document-Kind"] == "invoice"]
    assert sorted(m["X-Marketplace-Order-Id"] for m in mails) == shipped
    assert len({m["Message-ID"] for m in mails}) == len(shipped)
    credit_notes = [m for m in everything if m["X-Document-Kind"] == "credit_note"]
    assert sorted(m["X-Marketplace-Order-Id"] for m in credit_notes) == refunded
    assert len(everything) == expected


async def test_commands_drive_an_order_from_acceptance_to_its_invoice(
    amqp_url: str,
    database_url: str,
    sandbox: RunningSandbox,
    processor: Processor,
    db: asyncpg.Connection,
    notifier_factory: Callable[..., Awaitable[Notifier]],
    smtp_sink: SmtpSink,
) -> None:
    """accept -> the marketplace applies it -> poll -> waiting_shipment -> ship -> shipped ->
    the customer's invoice email, with every service running as it does in production."""
    await delete_queues(amqp_url, *POLLER_QUEUES)
    await notifier_factory()
    order = sandbox.marketplace.create_order(at=now() - timedelta(minutes=5))
    settings = poller_settings(
        amqp_url,
        database_url,
        sandbox,
        poll_interval_seconds=0.5,
        action_check_interval_seconds=0.3,
    )
    async with poller_app(settings):

        async def status_becomes(status: str) -> None:
            for _ in range(200):
                if await db.fetchval("SELECT lengow_status FROM orders") == status:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"order never reached {status}")

        def command(type_: str, **fields: object) -> bytes:
            data = {
                "command_id": f"{type_}-1",
                "marketplace": "manomano_fr",
                "marketplace_order_id": order.id,
                **fields,
            }
            return encode(envelope(data, type_, source="back-office"))

        await status_becomes("waiting_acceptance")
        accepted = await request(
            amqp_url, "orders.commands", "order.accept", command("order.accept")
        )
        assert accepted["type"] == "command.accepted"
        await status_becomes("waiting_shipment")

        shipped = await request(
            amqp_url,
            "orders.commands",
            "order.ship",
            command("order.ship", carrier="Colissimo", tracking_number="6A999"),
        )
        assert shipped["type"] == "command.accepted"
        await status_becomes("shipped")
        for _ in range(200):
            if smtp_sink.messages():
                break
            await asyncio.sleep(0.1)

    [mail] = smtp_sink.messages()
    assert mail["X-Marketplace-Order-Id"] == order.id
    assert "6A999" in mail.get_body(preferencelist=("plain",)).get_content()
    causes = await db.fetch(
        "SELECT to_status, cause, command_id FROM order_transitions ORDER BY id"
    )
    assert [tuple(c) for c in causes] == [
        ("waiting_acceptance", "observed", None),
        ("waiting_shipment", "command", "order.accept-1"),
        ("shipped", "command", "order.ship-1"),
    ]


async def test_every_order_recorded_is_marked_imported_once(
    amqp_url: str,
    sandbox: RunningSandbox,
    processor: Processor,
    db: asyncpg.Connection,
    poller_factory: Callable[..., Awaitable[Poller]],
) -> None:
    start = now() - timedelta(hours=2)
    for index in range(80):
        sandbox.marketplace.create_order(at=start + timedelta(seconds=index))
    poller = await poller_factory()
    await poller.broker.start()  # consumes order.link_requested
    await poller.recorded.start()  # and order.status_changed
    source = poller.settings.lengow_sources[0]
    await poller.sync.incremental(source)
    await wait_until_stored(processor, db, sandbox.statuses())
    # Orders move on and are read again (and the catch-up reads them all): no new marking.
    sandbox.marketplace.advance(now(), share=0.5)
    await poller.sync.incremental(source)
    await poller.sync.catchup(source)
    await wait_until_stored(processor, db, sandbox.statuses())

    ids = set(sandbox.marketplace.orders)
    marking = asyncio.create_task(poller.run_import_marking())
    for _ in range(200):
        if set(sandbox.marketplace.moi_calls) == ids:
            break
        await asyncio.sleep(0.05)
    assert await poller.imports.mark_pending() == 0  # nothing is left to mark
    assert dict(sandbox.marketplace.moi_calls) == dict.fromkeys(ids, 1)
    merchant_ids = {o.raw["merchant_order_id"][0] for o in sandbox.marketplace.orders.values()}
    assert len(merchant_ids) == len(ids)  # our own id, one for each order
    assert all(merchant_id.startswith("LO-") for merchant_id in merchant_ids)

    # Another service links an order to its own id: written back once more, with that id.
    order_id = sorted(ids)[0]
    answer = await request(
        amqp_url,
        "orders.commands",
        "order.link",
        encode(
            envelope(
                {
                    "command_id": "link-1",
                    "marketplace": "manomano_fr",
                    "marketplace_order_id": order_id,
                    "merchant_order_id": "ERP-0042",
                },
                "order.link",
                source="erp",
            )
        ),
    )
    assert answer["type"] == "command.accepted"
    for _ in range(200):
        if sandbox.marketplace.orders[order_id].raw["merchant_order_id"] == ["ERP-0042"]:
            break
        await asyncio.sleep(0.05)
    marking.cancel()
    assert sandbox.marketplace.orders[order_id].raw["merchant_order_id"] == ["ERP-0042"]
    assert sandbox.marketplace.moi_calls[order_id] == 2


async def test_an_order_lengow_does_not_know_is_not_marked_again_and_again(
    amqp_url: str,
    sandbox: RunningSandbox,
    poller_factory: Callable[..., Awaitable[Poller]],
) -> None:
    poller = await poller_factory(import_retry_seconds=0)
    await poller.imports.on_orders_recorded(
        [
            Envelope[OrderStatusChanged](
                type="order.status_changed",
                source="processor",
                data=OrderStatusChanged(
                    marketplace="manomano_fr",
                    marketplace_order_id="M-UNKNOWN",
                    from_status=None,
                    to_status=LengowStatus.WAITING_ACCEPTANCE,
                    manomano_status="PENDING",
                    kind="initial",
                    cause="observed",
                    observed_at=now(),
                ),
            )
        ]
    )
    await poller.imports.mark_pending()
    await poller.imports.mark_pending()
    assert sandbox.calls("PATCH /v3.0/orders/moi/") == 1
    row = await poller.pool.fetchrow("SELECT state, last_error FROM imports")
    assert row["state"] == "failed"
    assert "Pas trouvé" in row["last_error"]

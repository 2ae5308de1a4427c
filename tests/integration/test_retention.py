"""Retention on the real database: what is pruned, what is stripped, what is kept."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import asyncpg
import pytest

from services.processor.app import Processor
from services.processor.repository import personal_data_rule
from shared.database import create_pool, migrate_dsn
from shared.retention import apply_rules, messaging_rules
from shared.settings import ServiceSettings
from tests.factories import envelope, order_snapshot
from tests.integration.test_processor import publish_order, settle

pytestmark = pytest.mark.integration

SIX_MONTHS = timedelta(days=183)


async def test_personal_data_leaves_settled_orders_after_the_horizon(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """Before, snapshots kept the customer's name, email, phone and addresses forever. Now
    they leave an order settled for longer than the horizon; amounts, status, country and
    tracking stay, and orders still open or settled recently keep everything."""
    orders = {"OLD-REFUSED": "refused", "OLD-OPEN": "waiting_acceptance", "NEW-REFUSED": "refused"}
    for order_id, status in orders.items():
        await publish_order(amqp_url, envelope(order_snapshot(order_id, status)))
    await settle(processor, db, len(orders))
    await db.execute(
        "UPDATE orders SET updated_at = now() - interval '200 days'"
        " WHERE marketplace_order_id LIKE 'OLD-%'"
    )
    rules = [personal_data_rule(SIX_MONTHS)]
    assert await apply_rules(processor.pool, "processor", rules) == 1
    assert await apply_rules(processor.pool, "processor", rules) == 0  # once is enough

    rows = {
        r["marketplace_order_id"]: r
        for r in await db.fetch(
            "SELECT marketplace_order_id, snapshot::text AS snapshot, personal_data_removed_at"
            " FROM orders"
        )
    }
    stripped = json.loads(rows["OLD-REFUSED"]["snapshot"])
    assert rows["OLD-REFUSED"]["personal_data_removed_at"] is not None
    assert stripped["billing_address"] == {"common_country_iso_a2": "FR"}
    delivery = stripped["packages"][0]["delivery"]
    assert set(delivery) == {"common_country_iso_a2", "trackings"}
    assert "Camille" not in rows["OLD-REFUSED"]["snapshot"]
    assert stripped["total_order"] == "159.80"
    for kept in ("OLD-OPEN", "NEW-REFUSED"):
        assert "Camille" in rows[kept]["snapshot"]
        assert rows[kept]["personal_data_removed_at"] is None


async def test_the_inbox_and_the_published_outbox_are_pruned_invoices_never(
    database_url: str,
) -> None:
    """Before, inbox and outbox rows were kept forever. Now handled ids go after the inbox
    horizon and published rows after the outbox horizon; unpublished rows and invoices stay,
    however old."""
    await migrate_dsn(database_url, "notifier", "services.notifier")
    pool = await create_pool(database_url, "notifier")
    try:
        for age in (40, 1):
            await pool.execute(
                "INSERT INTO inbox (message_id, message_type, received_at)"
                " VALUES ($1, 'order.shipped', now() - make_interval(days => $2))",
                uuid.uuid4(),
                age,
            )
            for published in (True, False):
                await pool.execute(
                    "INSERT INTO outbox (message_id, exchange, routing_key, body, created_at,"
                    " published_at) VALUES ($1, 'orders.events', 'invoice.sent', '{}',"
                    " now() - make_interval(days => $2),"
                    " CASE WHEN $3 THEN now() - make_interval(days => $2) END)",
                    uuid.uuid4(),
                    age,
                    published,
                )
        await pool.execute(
            "INSERT INTO invoices (marketplace, marketplace_order_id, seller, year, sequence,"
            " invoice_number, issued_on, language, currency, total_incl, message_id,"
            " email_status, created_at, pdf) VALUES ('manomano_fr', 'M1', '123', 2017, 1,"
            " 'F2017-000001', '2017-01-02', 'fr', 'EUR', 10, '<m1@x>', 'sent',"
            " now() - interval '9 years', 'pdf')"
        )
        rules = ServiceSettings(inbox_retention_days=30, outbox_retention_days=7)
        assert await apply_rules(pool, "notifier", rules.messaging_retention()) == 2
        assert await pool.fetchval("SELECT count(*) FROM inbox") == 1
        published = await pool.fetch("SELECT published_at FROM outbox")
        assert len(published) == 3
        assert sum(1 for r in published if r["published_at"] is None) == 2
        assert await pool.fetchval("SELECT count(*) FROM invoices") == 1
        assert messaging_rules(inbox=SIX_MONTHS, outbox=SIX_MONTHS)[0].horizon == SIX_MONTHS
    finally:
        await pool.close()

"""The processor against the real RabbitMQ and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from faststream.rabbit import RabbitBroker

from services.processor.app import Processor
from shared.topology import declare_topology
from tests.bus import dead_letters, delete_queues, publish, queue_depth, recording
from tests.factories import encode, envelope, order_snapshot

pytestmark = pytest.mark.integration


async def publish_order(amqp_url: str, message: dict[str, object]) -> None:
    await publish(amqp_url, "orders.events", "order.changed", encode(message))


async def settle(processor: Processor, db: asyncpg.Connection, handled: int) -> None:
    """Wait until ``handled`` messages went through the inbox and the outbox is empty."""
    for _ in range(300):
        count = await db.fetchval("SELECT count(*) FROM inbox")
        if count >= handled and await processor.relay.pending() == 0:
            # Leave the relay's last publications time to reach the recorder.
            await asyncio.sleep(0.3)
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"only {count} of {handled} messages handled")


async def test_order_goes_through_its_lifecycle(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    async with recording(amqp_url, "orders.events") as events:
        for minutes, status in enumerate(["waiting_acceptance", "waiting_shipment", "shipped"]):
            await publish_order(amqp_url, envelope(order_snapshot(status=status, minutes=minutes)))
        await settle(processor, db, 3)

        order = await db.fetchrow("SELECT * FROM orders")
        assert order["lengow_status"] == "shipped"
        assert order["manomano_status"] == "SHIPPED"
        assert order["version"] == 3
        assert order["snapshot"]["billing_address"]["email"] == "camille.martin@example.fr"
        history = await db.fetch(
            "SELECT from_status, to_status, kind, cause FROM order_transitions ORDER BY id"
        )
        assert [tuple(r) for r in history] == [
            (None, "waiting_acceptance", "initial", "observed"),
            ("waiting_acceptance", "waiting_shipment", "skipped", "observed"),
            ("waiting_shipment", "shipped", "normal", "observed"),
        ]

        changes = events.of_type("order.status_changed")
        assert [c["data"]["to_status"] for c in changes] == [
            "waiting_acceptance",
            "waiting_shipment",
            "shipped",
        ]
        assert changes[2]["data"]["manomano_status"] == "SHIPPED"
        shipped = events.of_type("order.shipped")
        assert len(shipped) == 1
        data = shipped[0]["data"]
        assert data["billing_address"]["email"] == "camille.martin@example.fr"
        assert [line["title"] for line in data["lines"]] == [
            "Perceuse visseuse sans fil 18V",
            "Coffret de 10 forets béton",
        ]
        assert data["total_order"] == "159.80"
        assert data["currency"] == "EUR"
        assert data["carrier"] == "Colissimo"
        assert data["tracking_number"] == "6A12345678901"
        assert data["is_delivered_by_marketplace"] is False
        # The event names its cause and carries the poll's correlation id.
        assert shipped[0]["source"] == "processor"
        assert shipped[0]["causation_id"] is not None


async def test_duplicates_change_nothing_and_emit_nothing_twice(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    async with recording(amqp_url, "orders.events") as events:
        shipped = envelope(order_snapshot(status="shipped"))
        await publish_order(amqp_url, shipped)
        await publish_order(amqp_url, shipped)  # a redelivery: same message id
        # A re-poll of the same snapshot: a new message id, the same source time.
        await publish_order(amqp_url, envelope(order_snapshot(status="shipped")))
        await settle(processor, db, 2)

        assert await db.fetchval("SELECT count(*) FROM inbox") == 2
        assert await db.fetchval("SELECT version FROM orders") == 1
        assert await db.fetchval("SELECT count(*) FROM order_transitions") == 1
        assert len(events.of_type("order.status_changed")) == 1
        assert len(events.of_type("order.shipped")) == 1


async def test_stale_snapshot_changes_nothing(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    async with recording(amqp_url, "orders.events") as events:
        await publish_order(amqp_url, envelope(order_snapshot(status="shipped", minutes=10)))
        await settle(processor, db, 1)
        # An older snapshot arrives late (e.g. from a slow poll): it is ignored, not flagged.
        await publish_order(
            amqp_url, envelope(order_snapshot(status="waiting_shipment", minutes=5))
        )
        await settle(processor, db, 2)

        order = await db.fetchrow("SELECT lengow_status, version, snapshot FROM orders")
        assert order["lengow_status"] == "shipped"
        assert order["version"] == 1
        assert order["snapshot"]["lengow_status"] == "shipped"
        assert len(events.of_type("order.status_changed")) == 1
        assert events.of_type("order.transition_rejected") == []


async def test_impossible_backwards_move_is_flagged_not_applied(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    async with recording(amqp_url, "orders.events") as events:
        await publish_order(amqp_url, envelope(order_snapshot(status="shipped", minutes=0)))
        await settle(processor, db, 1)
        await publish_order(
            amqp_url, envelope(order_snapshot(status="waiting_acceptance", minutes=5))
        )
        await settle(processor, db, 2)

        assert await db.fetchval("SELECT lengow_status FROM orders") == "shipped"
        rejected = await db.fetchrow(
            "SELECT from_status, to_status, reason FROM order_transitions WHERE kind = 'rejected'"
        )
        assert (rejected["from_status"], rejected["to_status"]) == ("shipped", "waiting_acceptance")
        flagged = events.of_type("order.transition_rejected")
        assert len(flagged) == 1
        assert flagged[0]["data"]["current_status"] == "shipped"
        assert "cannot follow shipped" in flagged[0]["data"]["reason"]


async def test_fulfillment_order_arrives_shipped(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    async with recording(amqp_url, "orders.events") as events:
        await publish_order(
            amqp_url, envelope(order_snapshot("M-FULFIL-1", status="shipped", fulfillment=True))
        )
        await settle(processor, db, 1)
        assert await db.fetchval("SELECT is_delivered_by_marketplace FROM orders") is True
        shipped = events.of_type("order.shipped")
        assert len(shipped) == 1
        assert shipped[0]["data"]["is_delivered_by_marketplace"] is True


async def test_unknown_fields_are_kept(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    snapshot = order_snapshot(status="waiting_acceptance", meta={"shipping_deadline": "soon"})
    await publish_order(amqp_url, envelope(snapshot))
    await settle(processor, db, 1)
    stored = await db.fetchval("SELECT snapshot FROM orders")
    assert stored["meta"] == {"shipping_deadline": "soon"}
    assert stored["order_types"] == {"is_express": False, "is_business": False}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "invalid message"),
        (
            encode(envelope({k: v for k, v in order_snapshot().items() if k != "updated_at"})),
            "data.updated_at: Field required",
        ),
        (
            encode(envelope(order_snapshot(lengow_status="teleported"))),
            "data.lengow_status",
        ),
        (b"x" * 1_100_000, "exceeds the 1048576 bytes limit"),
    ],
    ids=["malformed-json", "missing-field", "unknown-status", "oversized"],
)
async def test_bad_message_goes_to_its_dead_letter_queue_with_the_reason(
    amqp_url: str, processor: Processor, db: asyncpg.Connection, body: bytes, reason: str
) -> None:
    bad_id = str(uuid.uuid4())
    await publish(amqp_url, "orders.events", "order.changed", body, message_id=bad_id)
    # The consumer keeps going: a good message after the bad one is handled.
    await publish_order(amqp_url, envelope(order_snapshot(status="waiting_acceptance")))
    await settle(processor, db, 1)

    dead = await dead_letters(amqp_url, "processor.order-changed.dlq")
    assert [m.message_id for m in dead] == [bad_id]
    assert reason in str(dead[0].headers.get("x-rejection-reason")), dead[0].headers
    assert dead[0].body == body
    assert await db.fetchval("SELECT count(*) FROM orders") == 1


async def test_outbox_row_left_unpublished_by_a_crash_is_published_later(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """A relay that died before marking its rows: the next sweep publishes them."""
    async with recording(amqp_url, "orders.events", "test.#") as events:
        message_id = uuid.uuid4()
        body = json.dumps({"id": str(message_id), "type": "test.crash"}).encode()
        await db.execute(
            "INSERT INTO outbox (message_id, exchange, routing_key, body)"
            " VALUES ($1, 'orders.events', 'test.crash', $2)",
            message_id,
            body,
        )
        await events.wait_for(lambda r: len(r.of_type("test.crash")) == 1)
        for _ in range(100):
            if await processor.relay.pending() == 0:
                break
            await asyncio.sleep(0.05)
        assert await db.fetchval("SELECT published_at FROM outbox") is not None


async def test_failure_while_handling_is_retried_not_lost(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """The database refuses the write (here: the table is gone for a while): the message is
    handed back, redelivered, and handled once the database is back."""
    await db.execute("ALTER TABLE orders RENAME TO orders_away")
    await publish_order(amqp_url, envelope(order_snapshot(status="waiting_acceptance")))
    await asyncio.sleep(1.0)  # several failed deliveries at retry_delay=0.1
    assert await db.fetchval("SELECT count(*) FROM inbox") == 0
    await db.execute("ALTER TABLE orders_away RENAME TO orders")
    await settle(processor, db, 1)
    assert await db.fetchval("SELECT lengow_status FROM orders") == "waiting_acceptance"
    assert await dead_letters(amqp_url, "processor.order-changed.dlq") == []


async def test_one_failing_delivery_does_not_hold_back_its_batch(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """Deliveries are committed in batches; the batch holding one delivery that the database
    refuses is retried one delivery at a time: the others commit, the bad one is handed back
    until the broker's delivery limit dead-letters it, and every delivery is acknowledged."""
    await db.execute(
        """
        CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.marketplace_order_id = 'POISON' THEN
                RAISE EXCEPTION 'poisoned order';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_poison BEFORE INSERT ON orders
            FOR EACH ROW EXECUTE FUNCTION refuse_poison();
        """
    )
    await processor.order_changes.stop()  # let everything queue up: one large batch
    good = [f"M{index:05d}" for index in range(300)]
    poison_id = str(uuid.uuid4())
    for order_id in good[:150]:
        await publish_order(amqp_url, envelope(order_snapshot(order_id)))
    await publish(
        amqp_url,
        "orders.events",
        "order.changed",
        encode(envelope(order_snapshot("POISON"), message_id=poison_id)),
        message_id=poison_id,
    )
    for order_id in good[150:]:
        await publish_order(amqp_url, envelope(order_snapshot(order_id)))
    await processor.order_changes.start()

    await settle(processor, db, len(good))
    stored = await db.fetch("SELECT marketplace_order_id FROM orders")
    assert sorted(row["marketplace_order_id"] for row in stored) == good
    for _ in range(200):  # 20 deliveries allowed, 0.1 s apart
        dead = await dead_letters(amqp_url, "processor.order-changed.dlq")
        if dead:
            break
        await asyncio.sleep(0.1)
    assert [m.message_id for m in dead] == [poison_id]
    # Everything was acknowledged: once the consumer lets go, nothing comes back.
    await processor.order_changes.stop()
    assert await queue_depth(amqp_url, "processor.order-changed") == 0
    assert await db.fetchval("SELECT count(*) FROM inbox") == len(good)


async def test_consumer_comes_back_after_its_queue_is_deleted(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """An operator deletes the queue under the running processor; once the topology is
    declared again (any service's start does it), the processor consumes again."""
    await publish_order(amqp_url, envelope(order_snapshot(status="waiting_acceptance")))
    await settle(processor, db, 1)
    await delete_queues(amqp_url, "processor.order-changed")
    await asyncio.sleep(0.5)  # the broker cancels the consumer
    async with RabbitBroker(amqp_url) as starting_service:
        await declare_topology(starting_service)
    for _ in range(100):
        if processor.order_changes.consuming:
            break
        await asyncio.sleep(0.1)
    await publish_order(amqp_url, envelope(order_snapshot(status="waiting_shipment", minutes=1)))
    await settle(processor, db, 2)
    assert await db.fetchval("SELECT lengow_status FROM orders") == "waiting_shipment"


async def test_a_snapshot_dated_in_the_future_is_refused(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """Before, an order.changed dated next year was stored, and every real change until then
    was ignored as older. Now it is dead-lettered with the reason; the order is not touched."""
    from datetime import UTC, datetime, timedelta

    future = (datetime.now(UTC) + timedelta(days=365)).isoformat()
    message_id = str(uuid.uuid4())
    await publish(
        amqp_url,
        "orders.events",
        "order.changed",
        encode(envelope(order_snapshot(updated_at=future), message_id=message_id)),
        message_id=message_id,
    )
    for _ in range(100):
        dead = await dead_letters(amqp_url, "processor.order-changed.dlq")
        if dead:
            break
        await asyncio.sleep(0.1)
    assert [m.message_id for m in dead] == [message_id]
    assert "minutes ahead of now" in dead[0].headers["x-rejection-reason"]
    assert await db.fetchval("SELECT count(*) FROM orders") == 0


async def test_deadlines_are_said_once_each_whatever_the_number_of_processors(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    from datetime import UTC, datetime, timedelta

    from services.processor.deadline_watch import DeadlineWatch
    from services.processor.metrics import ORDERS_BY_DEADLINE

    now = datetime.now(UTC)

    def ships_by(order_id: str, due: datetime) -> dict[str, object]:
        snapshot = order_snapshot(order_id, status="waiting_shipment")
        for line in snapshot["packages"][0]["cart"]:
            line["max_shipping_date"] = due.isoformat()
        return snapshot

    late = order_snapshot(
        "M-LATE",
        status="waiting_acceptance",
        marketplace_order_date=(now - timedelta(hours=50)).isoformat(),
    )
    async with recording(amqp_url, "orders.events", "order.*") as events:

        def alerts() -> list[dict[str, Any]]:
            return [m for m in events.messages if str(m["type"]).startswith("order.deadline_")]

        for snapshot in (late, ships_by("M-SOON", now + timedelta(hours=2))):
            await publish_order(amqp_url, envelope(snapshot))
        await publish_order(amqp_url, envelope(ships_by("M-CALM", now + timedelta(days=3))))
        await settle(processor, db, 3)
        # Two more processors look at once, beside the running one's own watch.
        watches = [
            DeadlineWatch(processor.unit_of_work, lead=timedelta(hours=6), interval=60)
            for _ in range(2)
        ]
        await asyncio.gather(*(watch.say_due_alerts() for watch in watches))
        assert await watches[0].say_due_alerts() == 0
        await events.wait_for(lambda _: len(alerts()) >= 2)
        await settle(processor, db, 3)
        said = sorted(
            (e["type"], e["data"]["marketplace_order_id"], e["data"]["deadline"]) for e in alerts()
        )
        assert said == [
            ("order.deadline_approaching", "M-SOON", "shipment"),
            ("order.deadline_missed", "M-LATE", "acceptance"),
        ]
        missed = events.of_type("order.deadline_missed")[0]["data"]
        assert missed["status"] == "waiting_acceptance"
        assert datetime.fromisoformat(missed["due_at"]) == now - timedelta(hours=2)

        async with processor.unit_of_work() as uow:
            await watches[0].refresh_metrics(uow)
        assert ORDERS_BY_DEADLINE.labels("acceptance", "late")._value.get() == 1
        assert ORDERS_BY_DEADLINE.labels("shipment", "at_risk")._value.get() == 1

        # Three hours on, the shipment is missed: said once more, and only that.
        later = DeadlineWatch(
            processor.unit_of_work,
            lead=timedelta(hours=6),
            interval=60,
            clock=lambda: now + timedelta(hours=3),
        )
        assert await later.say_due_alerts() == 1
        assert await later.say_due_alerts() == 0
        await events.wait_for(lambda _: len(alerts()) >= 3)
        await settle(processor, db, 3)
        assert [
            e["data"]["marketplace_order_id"] for e in events.of_type("order.deadline_missed")
        ] == [
            "M-LATE",
            "M-SOON",
        ]
    stored = await db.fetch("SELECT marketplace_order_id, deadline, phase FROM deadline_alerts")
    assert len(stored) == 3

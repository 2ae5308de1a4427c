"""Commands through the real broker to the real processor and back (events and replies)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from typing import Any

import aio_pika
import aiormq
import asyncpg
import pytest
from yarl import URL

from services.processor.app import Processor
from tests.bus import publish, recording, request
from tests.factories import ORDER, encode, envelope
from tests.integration.conftest import order_at

pytestmark = pytest.mark.integration

OTHER_ORDER = "M250112345679"


def command(type_: str, command_id: str | None = None, **fields: Any) -> dict[str, Any]:
    data = {
        "command_id": command_id or f"cmd-{uuid.uuid4().hex[:8]}",
        "marketplace": "manomano_fr",
        "marketplace_order_id": ORDER,
        **fields,
    }
    return envelope(data, type_, source="back-office")


async def ask(amqp_url: str, message: dict[str, Any]) -> dict[str, Any]:
    return await request(amqp_url, "orders.commands", message["type"], encode(message))


async def test_valid_command_is_accepted_and_asks_for_the_action(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_acceptance")
    async with recording(amqp_url, "orders.events", "#") as events:
        answer = await ask(amqp_url, command("order.accept", "accept-1"))
        await events.wait_for(lambda r: len(r.of_type("order.action_requested")) == 1)
    assert answer["type"] == "command.accepted"
    assert answer["data"]["command_id"] == "accept-1"
    requested = events.of_type("order.action_requested")[0]
    assert requested["data"]["action_type"] == "accept"
    assert requested["data"]["marketplace_order_id"] == ORDER
    assert requested["correlation_id"] == answer["correlation_id"]
    assert len(events.of_type("command.accepted")) == 1


@pytest.mark.parametrize(
    ("status", "type_", "fields", "reason"),
    [
        (
            "shipped",
            "order.ship",
            {"carrier": "Colissimo"},
            f"order {ORDER} is shipped: ship is not allowed (allowed now: refund)",
        ),
        (
            "waiting_shipment",
            "order.ship",
            {"carrier": "Other", "carrier_name": "Dupont"},
            "carrier Other needs carrier_name and tracking_url (missing: tracking_url)",
        ),
        (
            "shipped",
            "order.refund",
            {"refund_shipping_fees": True},
            "refund needs refund_reason and refund_shipping_fees (missing: refund_reason)",
        ),
        (
            "waiting_acceptance",
            "order.accept",
            {"carrier": "Colissimo"},
            "invalid command: carrier: Extra inputs are not permitted",
        ),
        ("waiting_acceptance", "order.cancel", {}, "unknown command type 'order.cancel'"),
    ],
    ids=[
        "ship-when-shipped",
        "other-without-url",
        "refund-without-reason",
        "unknown-field",
        "unknown-type",
    ],
)
async def test_invalid_command_is_rejected_with_a_reason(
    amqp_url: str,
    processor: Processor,
    db: asyncpg.Connection,
    status: str,
    type_: str,
    fields: dict[str, Any],
    reason: str,
) -> None:
    await order_at(amqp_url, db, status)
    async with recording(amqp_url, "orders.events", "#") as events:
        answer = await ask(amqp_url, command(type_, **fields))
        await events.wait_for(lambda r: len(r.of_type("command.rejected")) == 1)
    assert answer["type"] == "command.rejected"
    assert reason in answer["data"]["reason"]
    assert events.of_type("order.action_requested") == []


async def test_valid_ship_commands_are_accepted(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_shipment")
    await order_at(amqp_url, db, "waiting_shipment", order_id=OTHER_ORDER)
    listed = await ask(
        amqp_url, command("order.ship", carrier="DPD Predict", tracking_number="DPD1")
    )
    other = await ask(  # another order: one ship at a time per order
        amqp_url,
        command(
            "order.ship",
            marketplace_order_id=OTHER_ORDER,
            carrier="Other",
            carrier_name="Transports Dupont",
            tracking_url="https://dupont.example/track/1",
        ),
    )
    assert (listed["type"], other["type"]) == ("command.accepted", "command.accepted")


async def test_ship_is_checked_against_the_carriers_of_lengows_marketplace_document(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """The processor fixture published the sandbox's document as the poller does."""
    await order_at(amqp_url, db, "waiting_shipment")
    await order_at(amqp_url, db, "waiting_shipment", order_id=OTHER_ORDER)
    async with recording(amqp_url, "orders.events", "order.action_requested") as events:
        by_code = await ask(amqp_url, command("order.ship", carrier="dpd_predict"))
        by_label = await ask(
            amqp_url,
            command("order.ship", marketplace_order_id=OTHER_ORDER, carrier="DPD Predict"),
        )
        await events.wait_for(lambda r: len(r.messages) == 2)
    assert (by_code["type"], by_label["type"]) == ("command.accepted", "command.accepted")
    sent = [m["data"]["arguments"]["carrier"] for m in events.messages]
    assert sent == ["dpd_predict", "dpd_predict"]  # the code, never the label

    outside = await ask(amqp_url, command("order.ship", carrier="Pigeon voyageur"))
    assert outside["type"] == "command.rejected"
    reason = outside["data"]["reason"]
    assert "carrier 'Pigeon voyageur' is not in the marketplace's list" in reason
    assert "dpd_predict (DPD Predict)" in reason
    assert "colissimo (Colissimo)" in reason


async def test_link_writes_another_services_id_back(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_shipment")
    async with recording(amqp_url, "orders.events", "order.link_requested") as events:
        answer = await ask(amqp_url, command("order.link", merchant_order_id="ERP-1234"))
        await events.wait_for(lambda r: len(r.messages) == 1)
    assert answer["type"] == "command.accepted"
    assert events.messages[0]["data"]["merchant_order_id"] == "ERP-1234"
    unknown = await ask(
        amqp_url,
        command("order.link", merchant_order_id="ERP-9", marketplace_order_id="M-nope"),
    )
    assert unknown["type"] == "command.rejected"


async def test_unknown_order_and_malformed_json_are_rejected(
    amqp_url: str, processor: Processor
) -> None:
    unknown = await ask(amqp_url, command("order.accept"))
    assert unknown["type"] == "command.rejected"
    assert unknown["data"]["reason"] == (
        f"order {ORDER} is unknown: no order with this id has been seen"
    )
    async with recording(amqp_url, "orders.events", "command.*") as events:
        garbled = await request(amqp_url, "orders.commands", "order.accept", b'{"type": "order')
        await events.wait_for(lambda r: len(r.of_type("command.rejected")) == 1)
    assert garbled["type"] == "command.rejected"
    assert "invalid message" in garbled["data"]["reason"]
    assert garbled["data"]["command_id"] is None


async def test_same_command_id_has_one_effect_and_the_same_answer(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_acceptance")
    async with recording(amqp_url, "orders.events", "#") as events:
        first = await ask(amqp_url, command("order.accept", "same-id"))
        again = await ask(amqp_url, command("order.accept", "same-id"))
        # Even after the order moved on, the answer stays the one given the first time.
        await order_at(amqp_url, db, "waiting_shipment", minutes=5)
        third = await ask(amqp_url, command("order.accept", "same-id"))
        await asyncio.sleep(0.5)
    assert [a["type"] for a in (first, again, third)] == ["command.accepted"] * 3
    assert (first["data"]["duplicate"], again["data"]["duplicate"]) == (False, True)
    assert len(events.of_type("order.action_requested")) == 1
    assert await db.fetchval("SELECT count(*) FROM commands") == 1


async def test_observed_status_is_linked_to_the_command_that_caused_it(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_acceptance")
    await ask(amqp_url, command("order.accept", "accept-link"))
    async with recording(amqp_url, "orders.events", "order.status_changed") as events:
        await order_at(amqp_url, db, "waiting_shipment", minutes=5)
        await events.wait_for(lambda r: len(r.messages) == 1)
    change = events.messages[0]["data"]
    assert (change["cause"], change["command_id"]) == ("command", "accept-link")
    row = await db.fetchrow(
        "SELECT cause, command_id FROM order_transitions WHERE to_status = 'waiting_shipment'"
    )
    assert tuple(row) == ("command", "accept-link")
    assert await db.fetchval("SELECT completed_at FROM commands") is not None


async def test_a_second_refund_is_refused_while_the_first_is_in_flight(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """An operator whose first refund timed out sends another: the customer must not be
    refunded twice."""
    await order_at(amqp_url, db, "shipped")
    fields = {"refund_reason": "product_unavailable", "refund_shipping_fees": True}
    first = await ask(amqp_url, command("order.refund", "refund-1", **fields))
    second = await ask(amqp_url, command("order.refund", "refund-2", **fields))
    assert first["type"] == "command.accepted"
    assert second["type"] == "command.rejected"
    assert "command refund-1 was accepted and is waiting" in second["data"]["reason"]

    # The marketplace refuses the first: a new refund may be asked.
    await publish(
        amqp_url,
        "orders.events",
        "order.action_failed",
        encode(
            envelope(
                {
                    "marketplace": "manomano_fr",
                    "marketplace_order_id": ORDER,
                    "command_id": "refund-1",
                    "action_type": "refund",
                    "errors": ["refund refused by the marketplace"],
                },
                "order.action_failed",
            )
        ),
    )
    for _ in range(100):
        if await db.fetchval("SELECT failed_at FROM commands WHERE command_id = 'refund-1'"):
            break
        await asyncio.sleep(0.05)
    third = await ask(amqp_url, command("order.refund", "refund-3", **fields))
    assert third["type"] == "command.accepted"


async def test_ships_of_other_lines_may_be_in_flight_together(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_shipment")
    one = await ask(amqp_url, command("order.ship", carrier="colissimo", line_ids=["L1"]))
    two = await ask(amqp_url, command("order.ship", carrier="colissimo", line_ids=["L2"]))
    again = await ask(amqp_url, command("order.ship", carrier="colissimo", line_ids=["L2", "L3"]))
    whole = await ask(amqp_url, command("order.ship", carrier="colissimo"))
    assert [a["type"] for a in (one, two, again, whole)] == [
        "command.accepted",
        "command.accepted",
        "command.rejected",
        "command.rejected",
    ]


async def test_a_command_id_reused_for_other_arguments_is_refused(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_shipment")
    first = await ask(amqp_url, command("order.ship", "ship-1", carrier="colissimo"))
    same = await ask(amqp_url, command("order.ship", "ship-1", carrier="colissimo"))
    other = await ask(amqp_url, command("order.ship", "ship-1", carrier="chronopost"))
    assert first["type"] == "command.accepted"
    assert (same["type"], same["data"]["duplicate"]) == ("command.accepted", True)
    assert other["type"] == "command.rejected"
    assert other["data"]["reason"] == (
        "command_id ship-1 was used for other arguments: choose a new command_id for a new command"
    )
    stored = await db.fetchval("SELECT count(*) FROM commands WHERE command_id = 'ship-1'")
    assert stored == 1


async def test_a_command_without_a_user_id_is_refused(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """Before, a command was obeyed on its content alone. Now it must say which broker user
    sent it (the broker checks the claim) and that user must be allowed to send it."""
    await order_at(amqp_url, db, "waiting_acceptance")
    async with recording(amqp_url, "orders.events", "command.*") as events:
        message = command("order.accept", "unsigned-1")
        await publish(amqp_url, "orders.commands", "order.accept", encode(message), signed=False)
        await events.wait_for(lambda r: len(r.of_type("command.rejected")) == 1)
    [rejected] = events.of_type("command.rejected")
    assert "carries no AMQP user-id" in rejected["data"]["reason"]
    assert await db.fetchval("SELECT count(*) FROM commands") == 0  # its id is not taken


async def rabbitmqctl(*arguments: str) -> None:
    await asyncio.to_thread(
        subprocess.run, ["rabbitmqctl", *arguments], check=True, capture_output=True
    )


needs_local_rabbitmq = pytest.mark.skipif(
    shutil.which("rabbitmqctl") is None, reason="rabbitmqctl is not on this machine"
)


@needs_local_rabbitmq
async def test_a_command_from_a_user_not_allowed_is_refused_and_user_ids_cannot_be_forged(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    await order_at(amqp_url, db, "waiting_acceptance")
    user, password = f"intruder-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    await rabbitmqctl("add_user", user, password)
    try:
        await rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        intruder_url = str(URL(amqp_url).with_user(user).with_password(password))
        answer = await ask(intruder_url, command("order.accept", "intruder-1"))
        assert answer["type"] == "command.rejected"
        assert answer["data"]["reason"] == f"broker user {user!r} may not send order.accept"

        # Claiming to be another user is refused by the broker itself.
        connection = await aio_pika.connect(intruder_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("orders.commands")
            with pytest.raises(aiormq.exceptions.AMQPError):
                await exchange.publish(
                    aio_pika.Message(b"{}", user_id="ordersctl"), routing_key="order.accept"
                )
    finally:
        await rabbitmqctl("delete_user", user)


async def test_answers_go_only_to_reply_queues(
    amqp_url: str, processor: Processor, db: asyncpg.Connection
) -> None:
    """Before, any queue of the vhost could be named as reply_to, and the answer was written
    into it (an order.changed queue, say). Now only a caller's reply queue gets one."""
    await order_at(amqp_url, db, "waiting_acceptance")
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        victim = await channel.declare_queue(f"test.victim.{uuid.uuid4().hex[:6]}", durable=True)
        async with recording(amqp_url, "orders.events", "command.*") as events:
            message = command("order.accept", "reply-1")
            await publish(
                amqp_url, "orders.commands", "order.accept", encode(message), reply_to=victim.name
            )
            await events.wait_for(lambda r: len(r.of_type("command.accepted")) == 1)
        await asyncio.sleep(0.5)
        declared = await channel.declare_queue(victim.name, passive=True)
        assert declared.declaration_result.message_count == 0
        await victim.delete(if_unused=False, if_empty=False)

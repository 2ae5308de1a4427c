"""The action gateway against the Lengow sandbox over real HTTP, the broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from sandbox.marketplace import CARRIERS, now
from services.poller.app import Poller
from shared.contracts import Envelope, OrderActionRequested
from tests.bus import publish, recording
from tests.factories import encode
from tests.integration.conftest import RunningSandbox

pytestmark = pytest.mark.integration

StartPoller = Callable[..., Awaitable[Poller]]
POSTS = "POST /v3.0/orders/actions/"


def requested(order_id: str, action: str, command_id: str | None = None, **arguments: Any):  # type: ignore[no-untyped-def]
    return Envelope[OrderActionRequested](
        type="order.action_requested",
        source="processor",
        correlation_id=str(uuid.uuid4()),
        data=OrderActionRequested(
            marketplace="manomano_fr",
            marketplace_order_id=order_id,
            command_id=command_id or f"cmd-{uuid.uuid4().hex[:8]}",
            action_type=action,  # type: ignore[arg-type]
            arguments=arguments,
        ),
    )


async def rows(database_url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def actions(database_url: str) -> list[asyncpg.Record]:
    return await rows(database_url, "SELECT * FROM poller.actions ORDER BY created_at")


async def parts(database_url: str) -> list[asyncpg.Record]:
    return await rows(database_url, "SELECT * FROM poller.action_parts ORDER BY command_id, part")


async def follow_until_final(poller: Poller, rounds: int = 30) -> None:
    """Run the follow-up as the schedule does, until no action is left open."""
    for _ in range(rounds):
        await poller.gateway.follow_up()
        await poller.relay.publish_pending()
        async with poller.pool.acquire() as conn:
            if not await conn.fetchval("SELECT count(*) FROM actions WHERE state = 'open'"):
                return
        await asyncio.sleep(0.1)
    raise AssertionError("actions still open")


async def test_accepted_action_is_sent_once_and_its_success_reported(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = sandbox.marketplace.create_order(at=now())
    poller = await poller_factory()
    message = requested(order.id, "accept", "accept-1")
    await poller.gateway.on_action_requested(message)
    await poller.gateway.on_action_requested(message)  # redelivered: not sent again
    assert sandbox.calls(POSTS) == 1
    [part] = await parts(database_url)
    assert (part["state"], part["attempts"]) == ("sent", 1)

    async with recording(amqp_url, "orders.events", "order.#") as events:
        await follow_until_final(poller)
        await events.wait_for(lambda r: len(r.messages) >= 1)
    event = events.of_type("order.action_succeeded")[0]
    assert event["data"]["command_id"] == "accept-1"
    assert event["data"]["action_id"] == part["lengow_action_id"]
    assert event["correlation_id"] == message.correlation_id
    assert sandbox.statuses()[order.id] == "waiting_shipment"
    assert sandbox.calls(POSTS) == 1


async def test_marketplace_refusal_is_reported_with_its_reason_within_one_check_interval(
    amqp_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = sandbox.marketplace.create_order(at=now())  # waiting_acceptance: cannot ship
    interval = 0.5
    poller = await poller_factory(action_check_interval_seconds=interval)
    poller.relay.start()
    checks = asyncio.create_task(poller.run_action_checks())
    try:
        async with recording(amqp_url, "orders.events", "order.action_failed") as events:
            await poller.gateway.on_action_requested(
                requested(order.id, "ship", carrier="colissimo")
            )
            assert sandbox.calls(POSTS) == 1  # Lengow took it: the marketplace refuses later
            while not any(a.errors for a in sandbox.marketplace.actions.values()):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            refused_at = time.monotonic()
            await events.wait_for(lambda r: len(r.messages) >= 1, timeout=5)
            reported_after = time.monotonic() - refused_at
    finally:
        checks.cancel()
    failed = events.messages[0]["data"]
    assert failed["errors"] == [f"Order {order.id} is PENDING: ship refused"]
    assert reported_after < interval + 0.5  # one check interval, and the relay's publish


async def test_a_530_is_one_post_and_a_failure_with_lengows_message(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = sandbox.marketplace.create_order(at=now(), status="waiting_shipment")
    poller = await poller_factory()
    async with recording(amqp_url, "orders.events", "order.action_failed") as events:
        # A label where Lengow wants a code: its logical error, 530.
        await poller.gateway.on_action_requested(requested(order.id, "ship", carrier="Colissimo"))
        await poller.relay.publish_pending()
        await events.wait_for(lambda r: len(r.messages) >= 1)
    assert sandbox.calls(POSTS) == 1
    assert events.messages[0]["data"]["errors"] == [
        "carrier 'Colissimo' is not one of the accepted values: " + ", ".join(CARRIERS)
    ]
    [row] = await actions(database_url)
    assert row["state"] == "failed"


@pytest.mark.parametrize("lost", ["504", 1.5], ids=["504", "timeout"])
@pytest.mark.parametrize("kind", ["ship", "refund"])
async def test_applied_then_the_reply_lost_is_one_post_and_ends_succeeded(
    amqp_url: str,
    sandbox: RunningSandbox,
    poller_factory: StartPoller,
    kind: str,
    lost: str | float,
) -> None:
    status = "waiting_shipment" if kind == "ship" else "shipped"
    order = sandbox.marketplace.create_order(at=now(), status=status)
    arguments: dict[str, Any] = (
        {"carrier": "colissimo", "tracking_number": "6A999"}
        if kind == "ship"
        else {"refund_reason": "product_unavailable", "refund_shipping_fees": True}
    )
    poller = await poller_factory(lengow_timeout_seconds=0.5)
    await poller.sync.incremental(poller.settings.lengow_sources[0])  # the order's source
    sandbox.state.faults.lost_replies.append(lost)
    message = requested(order.id, kind, **arguments)
    async with recording(amqp_url, "orders.events", "order.#") as events:
        await poller.gateway.on_action_requested(message)
        await poller.gateway.on_action_requested(message)  # redelivered meanwhile
        await follow_until_final(poller)
        await events.wait_for(lambda r: len(r.messages) >= 1)
    assert sandbox.calls(POSTS) == 1
    assert len(sandbox.marketplace.actions) == 1
    assert [m["type"] for m in events.messages if "action" in m["type"]] == [
        "order.action_succeeded"
    ]
    expected = "shipped" if kind == "ship" else "refunding"
    assert sandbox.statuses()[order.id] == expected


async def test_an_attempt_in_doubt_that_reached_lengow_is_not_sent_again(
    database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = sandbox.marketplace.create_order(at=now())
    poller = await poller_factory()
    message = requested(order.id, "accept")
    await poller.gateway.on_action_requested(message)
    # The state a crash right after the POST leaves: Lengow has it, we never stored its id.
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        "UPDATE poller.action_parts SET state = 'sending', lengow_action_id = NULL, sent_at = NULL"
    )
    await conn.close()
    await poller.gateway.follow_up()
    assert sandbox.calls(POSTS) == 1
    [part] = await parts(database_url)
    assert part["state"] == "sent"
    assert part["lengow_action_id"] == str(next(iter(sandbox.marketplace.actions)))


async def test_lengow_down_while_sending_is_sent_later_once(
    database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = sandbox.marketplace.create_order(at=now())
    poller = await poller_factory()
    await poller.sync.incremental(poller.settings.lengow_sources[0])  # holds a token now
    sandbox.state.faults.write_statuses.append(503)  # the POST: it may have acted
    await poller.gateway.on_action_requested(requested(order.id, "accept"))
    [part] = await parts(database_url)
    assert (part["state"], part["attempts"]) == ("sending", 1)
    assert sandbox.calls(POSTS) == 1
    # The follow-up looks before sending again: Lengow has nothing, so it is sent, once.
    await poller.gateway.follow_up()
    [part] = await parts(database_url)
    assert (part["state"], part["attempts"]) == ("sent", 2)
    assert sandbox.calls(POSTS) == 2
    assert len(sandbox.marketplace.actions) == 1


async def test_an_action_already_queued_at_lengow_is_adopted_not_sent_again(
    database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    """The plugins' duplicate check: the same parameters with ``queued=True`` before a POST."""
    order = sandbox.marketplace.create_order(at=now(), status="waiting_shipment")
    sandbox.marketplace.action_delay = timedelta(seconds=30)  # it stays in Lengow's queue
    queued = sandbox.marketplace.request_action(
        {
            "marketplace_order_id": order.id,
            "action_type": "ship",
            "carrier": "colissimo",
            "tracking_number": "6A1",
        },
        now(),
    )
    poller = await poller_factory()
    await poller.gateway.on_action_requested(
        requested(order.id, "ship", carrier="colissimo", tracking_number="6A1")
    )
    assert sandbox.calls(POSTS) == 0
    [part] = await parts(database_url)
    assert (part["state"], part["lengow_action_id"]) == ("sent", str(queued.id))
    # Another tracking number is another action: it is sent.
    await poller.gateway.on_action_requested(
        requested(order.id, "ship", carrier="colissimo", tracking_number="6A2")
    )
    assert sandbox.calls(POSTS) == 1


async def test_line_level_ship_is_one_action_per_line(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = None
    while order is None or len(order.lines()) < 2:
        order = sandbox.marketplace.create_order(at=now(), status="waiting_shipment")
    lines = [line["marketplace_order_line_id"] for line in order.lines()]
    poller = await poller_factory()
    async with recording(amqp_url, "orders.events", "order.#") as events:
        await poller.gateway.on_action_requested(
            requested(order.id, "ship", carrier="colissimo", line=lines)
        )
        await follow_until_final(poller)
        await events.wait_for(lambda r: len(r.messages) >= 1)
    sent = sorted(a.arguments["line"] for a in sandbox.marketplace.actions.values())
    assert sent == sorted(lines)
    assert sandbox.calls(POSTS) == len(lines)
    assert [m["type"] for m in events.messages if "action" in m["type"]] == [
        "order.action_succeeded"
    ]
    assert sandbox.statuses()[order.id] == "shipped"


async def test_more_than_a_hundred_actions_on_the_account_every_verdict_is_found(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    # 130 actions someone else sent first, so that ours are past Lengow's first page.
    for _ in range(130):
        other = sandbox.marketplace.create_order(at=now())
        sandbox.marketplace.request_action(
            {"marketplace_order_id": other.id, "action_type": "accept"}, now()
        )
    ours = [sandbox.marketplace.create_order(at=now()) for _ in range(5)]
    poller = await poller_factory()
    for order in ours:
        await poller.gateway.on_action_requested(requested(order.id, "accept"))
    await asyncio.sleep(0.3)  # the marketplace answers
    async with recording(amqp_url, "orders.events", "order.action_succeeded") as events:
        before = sandbox.calls("GET /v3.0/orders/actions/")
        settled = await poller.gateway.follow_up()
        await poller.relay.publish_pending()
        await events.wait_for(lambda r: len(r.messages) >= 5)
    assert settled == 5
    assert sandbox.calls("GET /v3.0/orders/actions/") - before == 2  # two pages, one listing


async def test_a_hundred_and_twenty_requests_at_once_are_each_sent_once_while_polls_go_on(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    orders = [sandbox.marketplace.create_order(at=now()) for _ in range(120)]
    poller = await poller_factory(poller_db_pool_size=5, action_concurrency=3)
    await poller.broker.start()
    for order in orders:
        await publish(
            amqp_url,
            "orders.events",
            "order.action_requested",
            encode(requested(order.id, "accept").model_dump(mode="json")),
        )
    polls = 0
    deadline = time.monotonic() + 60
    while len(sandbox.marketplace.actions) < 120 and time.monotonic() < deadline:
        report = await asyncio.wait_for(
            poller.sync.incremental(poller.settings.lengow_sources[0]), timeout=10
        )
        assert report.error is None
        polls += 1
    per_order = [a.order_id for a in sandbox.marketplace.actions.values()]
    assert sorted(per_order) == sorted(order.id for order in orders)  # each one, once
    assert polls >= 1
    await poller.actions_check()  # ready: the consumer moves
    await poller.polls_check()


async def test_readiness_fails_when_the_action_consumer_holds_deliveries_without_progress(
    poller_factory: StartPoller,
) -> None:
    poller = await poller_factory()
    await poller.actions_check()  # idle: ready
    poller.gateway.progress.in_flight = 1
    poller.gateway.progress.last_progress = time.monotonic() - 3600
    with pytest.raises(TimeoutError, match="no action request handled for"):
        await poller.actions_check()

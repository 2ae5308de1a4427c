"""The action gateway against the Lengow sandbox over real HTTP, the broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from sandbox.marketplace import now
from services.poller.app import Poller
from shared.contracts import Envelope, OrderActionRequested
from tests.bus import recording
from tests.integration.conftest import RunningSandbox

pytestmark = pytest.mark.integration

StartPoller = Callable[..., Awaitable[Poller]]


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


async def actions(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch("SELECT * FROM poller.actions ORDER BY created_at")
    finally:
        await conn.close()


async def test_accepted_action_is_sent_once_and_its_success_reported(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = sandbox.marketplace.create_order(at=now())
    poller = await poller_factory()
    message = requested(order.id, "accept", "accept-1")
    await poller.gateway.on_action_requested(message)
    await poller.gateway.on_action_requested(message)  # redelivered: not sent again
    assert sandbox.calls("POST /v3.0/orders/actions/") == 1
    [row] = await actions(database_url)
    assert (row["state"], row["attempts"]) == ("sent", 1)

    await asyncio.sleep(0.3)  # the sandbox applies actions on its next tick
    async with recording(amqp_url, "orders.events", "order.#") as events:
        assert await poller.gateway.check_sent() == 1
        await poller.relay.publish_pending()
        await events.wait_for(lambda r: len(r.messages) >= 1)
    event = events.of_type("order.action_succeeded")[0]
    assert event["data"]["command_id"] == "accept-1"
    assert event["data"]["action_id"] == row["lengow_action_id"]
    assert event["correlation_id"] == message.correlation_id
    assert sandbox.statuses()[order.id] == "waiting_shipment"


async def test_action_the_marketplace_refuses_is_reported_failed_with_its_reason(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = sandbox.marketplace.create_order(at=now())  # waiting_acceptance: cannot ship
    poller = await poller_factory()
    async with recording(amqp_url, "orders.events", "order.#") as events:
        await poller.gateway.on_action_requested(requested(order.id, "ship", carrier="DPD"))
        await poller.relay.publish_pending()
        await events.wait_for(lambda r: len(r.messages) >= 1)
    failed = events.of_type("order.action_failed")[0]["data"]
    assert failed["errors"] == ["action ship not allowed at status waiting_acceptance"]
    [row] = await actions(database_url)
    assert row["state"] == "failed"


async def test_lengow_down_while_sending_is_retried_then_given_up(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = sandbox.marketplace.create_order(at=now())
    poller = await poller_factory(lengow_max_attempts=2, action_max_attempts=2)
    message = requested(order.id, "accept")
    await poller.sync.incremental(poller.settings.lengow_sources[0])  # holds a token now
    sandbox.state.faults.statuses.extend([500] * 2)
    with pytest.raises(Exception, match="after 2 attempts"):
        await poller.gateway.on_action_requested(message)  # handed back for a redelivery
    [row] = await actions(database_url)
    assert (row["state"], row["attempts"]) == ("sending", 1)

    # The redelivery finds the attempt in doubt, asks Lengow, finds nothing, sends it.
    await poller.gateway.on_action_requested(message)
    [row] = await actions(database_url)
    assert (row["state"], row["attempts"]) == ("sent", 2)
    assert sandbox.calls("POST /v3.0/orders/actions/") == 3  # two answered 500, then this one
    assert sandbox.calls("GET /v3.0/orders/actions/") == 1  # the in-doubt check
    assert len(sandbox.marketplace.actions) == 1

    other = sandbox.marketplace.create_order(at=now())
    sandbox.state.faults.statuses.extend([500] * 20)
    stubborn = requested(other.id, "accept")
    with pytest.raises(Exception, match="after 2 attempts"):
        await poller.gateway.on_action_requested(stubborn)
    async with recording(amqp_url, "orders.events", "order.action_failed") as events:
        await poller.gateway.on_action_requested(stubborn)
        await poller.relay.publish_pending()
        await events.wait_for(lambda r: len(r.messages) >= 1)
    assert "gave up after 2 attempts" in events.messages[0]["data"]["errors"][0]


async def test_attempt_in_doubt_that_reached_lengow_is_not_sent_again(
    database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    order = sandbox.marketplace.create_order(at=now())
    poller = await poller_factory()
    message = requested(order.id, "accept")
    await poller.gateway.on_action_requested(message)
    # The state a crash right after the POST leaves: Lengow has it, we never stored its id.
    conn = await asyncpg.connect(database_url)
    await conn.execute("UPDATE poller.actions SET state = 'sending', lengow_action_id = NULL")
    await conn.close()
    await poller.gateway.on_action_requested(message)
    assert sandbox.calls("POST /v3.0/orders/actions/") == 1
    [row] = await actions(database_url)
    assert row["state"] == "sent"
    assert row["lengow_action_id"] == str(next(iter(sandbox.marketplace.actions)))

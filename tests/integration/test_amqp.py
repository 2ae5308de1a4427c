"""The publisher that every service's outbox relay, the poller and dead-lettering use: batches
framed on aiormq's channel, confirmed by the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import aio_pika
import aiormq
import pytest
from faststream.rabbit import RabbitBroker

from shared.amqp import PERSISTENT, AmqpPublisher, Outgoing, UnroutableMessageError
from shared.database import create_pool, migrate_dsn
from shared.outbox import OutboxRelay
from shared.topology import declare_topology
from tests.bus import delete_queues

pytestmark = pytest.mark.integration


@pytest.fixture
async def publisher(amqp_url: str) -> AsyncIterator[AmqpPublisher]:
    publisher = AmqpPublisher(amqp_url)
    await publisher.connect()
    yield publisher
    await publisher.close()


@pytest.fixture
async def channel(amqp_url: str) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        yield await connection.channel()


async def _queue(
    channel: aio_pika.abc.AbstractChannel, **arguments: object
) -> aio_pika.abc.AbstractQueue:
    name = f"test.amqp.{uuid.uuid4().hex[:8]}"
    return await channel.declare_queue(name, durable=True, arguments=dict(arguments) or None)


async def _drain(
    queue: aio_pika.abc.AbstractQueue, count: int
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    received = []
    async with queue.iterator() as messages:
        async for message in messages:
            await message.ack()
            received.append(message)
            if len(received) == count:
                break
    return received


async def test_a_batch_arrives_whole_in_order_with_its_properties(
    publisher: AmqpPublisher, channel: aio_pika.abc.AbstractChannel
) -> None:
    queue = await _queue(channel)
    large = bytes(range(256)) * 1200  # 300 KiB: more than one AMQP frame (128 KiB)
    batch = [
        Outgoing(
            "",
            queue.name,
            large if index == 7 else f'{{"n": {index}}}'.encode(),
            message_id=f"m-{index}",
            correlation_id=f"c-{index}",
            reply_to="answers" if index == 3 else None,
            headers={"x-index": index},
        )
        for index in range(1200)
    ]
    await publisher.publish_many(batch)

    received = await asyncio.wait_for(_drain(queue, len(batch)), 30)
    assert [m.message_id for m in received] == [f"m-{i}" for i in range(1200)]
    assert received[7].body == large
    assert received[8].body == b'{"n": 8}'
    assert received[3].reply_to == "answers"
    assert received[5].correlation_id == "c-5"
    assert received[5].headers == {"x-index": 5}
    assert {m.delivery_mode for m in received} == {PERSISTENT}
    assert {m.content_type for m in received} == {"application/json"}
    await queue.delete(if_unused=False, if_empty=False)


async def test_a_message_the_broker_refuses_fails_the_batch(
    publisher: AmqpPublisher, channel: aio_pika.abc.AbstractChannel
) -> None:
    # A full queue that refuses new messages: the broker nacks the publishes beyond it.
    queue = await _queue(channel, **{"x-max-length": 2, "x-overflow": "reject-publish"})
    batch = [Outgoing("", queue.name, b"{}", message_id=str(i)) for i in range(5)]
    with pytest.raises(aiormq.exceptions.DeliveryError):
        await publisher.publish_many(batch)

    # The publisher stays usable: the queue takes what fits.
    await queue.purge()
    await publisher.publish_many(batch[:2])
    assert [m.message_id for m in await asyncio.wait_for(_drain(queue, 2), 10)] == ["0", "1"]
    await queue.delete(if_unused=False, if_empty=False)


async def test_a_closed_channel_fails_the_batch_and_the_next_one_goes_through(
    publisher: AmqpPublisher, channel: aio_pika.abc.AbstractChannel
) -> None:
    queue = await _queue(channel)
    # An exchange that does not exist: the broker closes the channel (404).
    with pytest.raises(aiormq.exceptions.AMQPError):
        await publisher.publish_many([Outgoing("no-such-exchange", "x", b"{}")] * 3)

    # aio-pika reopens the channel; the next batch is confirmed.
    for _ in range(50):
        try:
            await publisher.publish_many([Outgoing("", queue.name, b"{}", message_id="after")])
            break
        except aiormq.exceptions.ChannelInvalidStateError:  # not reopened yet
            await asyncio.sleep(0.1)
    assert [m.message_id for m in await asyncio.wait_for(_drain(queue, 1), 10)] == ["after"]
    await queue.delete(if_unused=False, if_empty=False)


async def test_a_batch_that_cannot_be_framed_leaves_the_channel_usable(
    publisher: AmqpPublisher, channel: aio_pika.abc.AbstractChannel
) -> None:
    queue = await _queue(channel)
    unencodable = Outgoing("", queue.name, b"{}", headers={"x-object": object()})
    with pytest.raises(TypeError):
        await publisher.publish_many([Outgoing("", queue.name, b"{}"), unencodable])

    # Confirms still match their messages: the next batch is confirmed, and only it arrived.
    batch = [Outgoing("", queue.name, b"{}", message_id=str(i)) for i in range(3)]
    await asyncio.wait_for(publisher.publish_many(batch), 10)
    assert [m.message_id for m in await asyncio.wait_for(_drain(queue, 3), 10)] == ["0", "1", "2"]
    await asyncio.sleep(0.2)
    left = await channel.declare_queue(queue.name, passive=True)
    assert left.declaration_result.message_count == 0
    await queue.delete(if_unused=False, if_empty=False)


async def test_a_message_no_queue_takes_fails_the_publish(
    publisher: AmqpPublisher, channel: aio_pika.abc.AbstractChannel
) -> None:
    """Before, an unroutable message (its queue deleted, a binding missing) was confirmed by
    the broker and dropped. Now a mandatory message comes back and fails its batch."""
    queue = await _queue(channel)
    nowhere = f"test.nowhere.{uuid.uuid4().hex[:8]}"
    batch = [
        Outgoing("", queue.name, b"{}", message_id="kept"),
        Outgoing("", nowhere, b"{}", message_id="returned"),
    ]
    with pytest.raises(UnroutableMessageError, match=nowhere):
        await publisher.publish_many(batch)
    # An event only outside subscribers read may find nobody: published, not mandatory.
    await publisher.publish_many([Outgoing("", nowhere, b"{}", mandatory=False)])
    await publisher.publish_many([Outgoing("", queue.name, b"{}", message_id="after")])
    received = await asyncio.wait_for(_drain(queue, 2), 10)
    assert [m.message_id for m in received] == ["kept", "after"]
    await queue.delete(if_unused=False, if_empty=False)


async def test_a_confirm_that_does_not_come_in_time_fails_the_publish(
    amqp_url: str, channel: aio_pika.abc.AbstractChannel
) -> None:
    """A publish never waits forever for the broker: past the timeout it fails (and the
    caller sends it again); the publisher stays usable, late confirms are ignored."""
    impatient = AmqpPublisher(amqp_url, confirm_timeout=1e-6)
    await impatient.connect()
    queue = await _queue(channel)
    try:
        with pytest.raises(TimeoutError, match="within"):
            await impatient.publish_many([Outgoing("", queue.name, b"{}")] * 200)
        impatient._confirm_timeout = 10
        await impatient.publish_many([Outgoing("", queue.name, b"{}", message_id="later")])
    finally:
        await impatient.close()
    received = await asyncio.wait_for(_drain(queue, 201), 10)
    assert received[-1].message_id == "later"
    await queue.delete(if_unused=False, if_empty=False)


class HeldPublisher(AmqpPublisher):
    """Waits ``hold`` before publishing: a slow broker."""

    def __init__(self, url: str, hold: asyncio.Event) -> None:
        super().__init__(url)
        self.hold = hold
        self.waiting = asyncio.Event()

    async def publish_many(self, messages: Sequence[Outgoing]) -> None:
        self.waiting.set()
        await self.hold.wait()
        await super().publish_many(messages)


async def test_the_relay_holds_no_lock_while_it_waits_for_the_broker(
    amqp_url: str, database_url: str, channel: aio_pika.abc.AbstractChannel
) -> None:
    """Before, the relay kept its transaction (and the rows' locks) open while it waited for
    the confirms. Now the rows are claimed with a lease and no transaction waits on the
    broker; a second relay leaves claimed rows alone."""
    await migrate_dsn(database_url, "relaytest", "services.notifier")
    pool = await create_pool(database_url, "relaytest")
    queue = await _queue(channel)
    hold = asyncio.Event()
    publisher = HeldPublisher(amqp_url, hold)
    await publisher.connect()
    try:
        await pool.execute(
            "INSERT INTO outbox (message_id, exchange, routing_key, body)"
            " VALUES ($1, '', $2, '{}')",
            uuid.uuid4(),
            queue.name,
        )
        relay = OutboxRelay(pool, publisher)
        publishing = asyncio.create_task(relay.publish_pending())
        await asyncio.wait_for(publisher.waiting.wait(), 5)
        async with pool.acquire() as conn, conn.transaction():
            locked = await conn.fetch("SELECT id FROM outbox FOR UPDATE NOWAIT")
            assert len(locked) == 1
        assert await OutboxRelay(pool, AmqpPublisher(amqp_url)).publish_pending() == 0
        hold.set()
        assert await asyncio.wait_for(publishing, 10) == 1
        assert await relay.pending() == 0
    finally:
        await publisher.close()
        await pool.close()
    assert len(await asyncio.wait_for(_drain(queue, 1), 10)) == 1
    await queue.delete(if_unused=False, if_empty=False)


async def test_the_relay_keeps_a_row_no_queue_takes(
    amqp_url: str, database_url: str, publisher: AmqpPublisher
) -> None:
    """An order.status_changed whose queue is gone (an operator deleted it) stays in the outbox
    until the queue is back; an event only outside subscribers read is published."""
    async with RabbitBroker(amqp_url) as broker:
        await declare_topology(broker)
    await delete_queues(amqp_url, "poller.order-recorded")
    await migrate_dsn(database_url, "relaytest", "services.notifier")
    pool = await create_pool(database_url, "relaytest")
    try:
        for routing_key in ("invoice.sent", "order.status_changed"):
            await pool.execute(
                "INSERT INTO outbox (message_id, exchange, routing_key, body)"
                " VALUES ($1, 'orders.events', $2, '{}')",
                uuid.uuid4(),
                routing_key,
            )
        relay = OutboxRelay(pool, publisher, batch_size=1)
        assert await relay.publish_pending() == 1  # invoice.sent: nobody needs to read it
        with pytest.raises(UnroutableMessageError, match=r"order\.status_changed"):
            await relay.publish_pending()
        assert await relay.pending() == 1
        unpublished = "SELECT claimed_until FROM outbox WHERE published_at IS NULL"
        assert await pool.fetchval(unpublished) is None
        async with RabbitBroker(amqp_url) as broker:
            await declare_topology(broker)
        assert await relay.publish_pending() == 1
    finally:
        await pool.close()
        await delete_queues(amqp_url, "poller.order-recorded")
        async with RabbitBroker(amqp_url) as broker:
            await declare_topology(broker)

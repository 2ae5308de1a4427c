"""The publisher that every service's outbox relay, the poller and dead-lettering use: batches
framed on aiormq's channel, confirmed by the real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest

from shared.amqp import PERSISTENT, AmqpPublisher, Outgoing

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

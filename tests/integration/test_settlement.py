"""Settling deliveries on the real broker: nothing acknowledged unsettled, redeliveries that back
off, a consumer that never sleeps on a failed delivery, dead-lettering that cannot drop."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import aiormq
import pytest
from faststream.rabbit import QueueType, RabbitBroker, RabbitQueue

from shared.amqp import AmqpPublisher
from shared.consumers import BatchConsumer, ConcurrentConsumer
from shared.contracts import Envelope
from shared.settlement import RedeliveryBackoff
from shared.topology import (
    CONSUMERS,
    DEAD_LETTERS,
    TopologyMismatchError,
    consumer_queue,
    declare_topology,
)
from tests.bus import dead_letters, delete_queues, publish, queue_depth

pytestmark = pytest.mark.integration


class FailingDeadLetters(AmqpPublisher):
    """The broker refuses the first ``failures`` dead letters (as when the publisher's
    connection is down)."""

    def __init__(self, url: str, failures: int) -> None:
        super().__init__(url)
        self.failures = failures

    async def publish(self, *args: Any, **kwargs: Any) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise aiormq.exceptions.ChannelInvalidStateError("the publisher's channel is closed")
        await super().publish(*args, **kwargs)


@pytest.fixture
async def test_queue(amqp_url: str) -> AsyncIterator[RabbitQueue]:
    """A quorum queue like the services', dead-lettering to ``<name>.dlq``."""
    name = f"test.settle.{uuid.uuid4().hex[:8]}"
    queue = RabbitQueue(
        name,
        queue_type=QueueType.QUORUM,
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": DEAD_LETTERS.name,
            "x-dead-letter-routing-key": name,
            "x-delivery-limit": 20,
        },
    )
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(DEAD_LETTERS.name, "direct", durable=True)
        await channel.declare_queue(name, durable=True, arguments=queue.arguments)
        dlq = await channel.declare_queue(
            f"{name}.dlq", durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dlq.bind(DEAD_LETTERS.name, routing_key=name)
    yield queue
    await delete_queues(amqp_url, name, f"{name}.dlq")


def message(value: str) -> bytes:
    return (
        Envelope[dict[str, str]](type="test", source="test", data={"v": value})
        .model_dump_json(exclude_none=True)
        .encode()
    )


async def wait_until(condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_an_unsettled_delivery_is_never_acknowledged_by_the_next_batch(
    amqp_url: str, test_queue: RabbitQueue
) -> None:
    """Before, a malformed delivery whose dead letter could not be published stayed
    unacknowledged, and the next batch's ``basic.ack multiple`` acknowledged it: lost, never
    in the dead-letter queue. Now it is handed back, and dead-lettered once the broker takes
    the dead letter."""
    publisher = FailingDeadLetters(amqp_url, failures=1)
    await publisher.connect()
    handled: list[str] = []

    async def handle(envelopes: Sequence[Envelope[dict[str, str]]]) -> None:
        handled.extend(e.data["v"] for e in envelopes)

    consumer = BatchConsumer(
        amqp_url,
        test_queue,
        Envelope[dict[str, str]],
        handle,
        publisher,
        prefetch=10,
        max_batch=10,
        backoff=RedeliveryBackoff(first=0.3, cap=0.3),
    )
    await consumer.start()
    try:
        await publish(amqp_url, "", test_queue.name, b"not json", message_id="malformed")
        await wait_until(lambda: publisher.failures == 0)
        for value in ("a", "b", "c"):
            await publish(amqp_url, "", test_queue.name, message(value))
            await wait_until(lambda v=value: v in handled)  # type: ignore[misc]
        await asyncio.sleep(1.0)  # the handed-back delivery comes back and is dead-lettered
    finally:
        await consumer.stop()
        await publisher.close()
    assert handled == ["a", "b", "c"]
    assert [m.message_id for m in await dead_letters(amqp_url, f"{test_queue.name}.dlq")] == [
        "malformed"
    ]
    assert await queue_depth(amqp_url, test_queue.name) == 0


async def test_redeliveries_back_off_exponentially_up_to_the_cap(
    amqp_url: str, test_queue: RabbitQueue
) -> None:
    """Before, a failed delivery came back every RETRY_DELAY, so 20 deliveries spanned 20 s and
    any longer outage dead-lettered. Now each pause doubles, up to the cap."""
    publisher = AmqpPublisher(amqp_url)
    await publisher.connect()
    attempts: list[float] = []

    async def handle(envelope: Envelope[dict[str, str]]) -> None:
        attempts.append(time.monotonic())
        raise ConnectionRefusedError("the database is away")

    consumer = ConcurrentConsumer(
        amqp_url,
        test_queue,
        Envelope[dict[str, str]],
        handle,
        publisher,
        prefetch=5,
        backoff=RedeliveryBackoff(first=0.1, cap=0.8),
    )
    await consumer.start()
    try:
        await publish(amqp_url, "", test_queue.name, message("x"))
        await wait_until(lambda: len(attempts) >= 6, seconds=15)
    finally:
        await consumer.stop()
        await publisher.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    for gap, pause in zip(gaps, (0.1, 0.2, 0.4, 0.8, 0.8), strict=False):
        assert pause * 0.9 <= gap < pause + 0.5, (gaps, pause)


async def test_a_delivery_waiting_to_be_retried_holds_back_nothing(
    amqp_url: str, test_queue: RabbitQueue
) -> None:
    """Before, the batch consumer slept the retry delay on a failed delivery before taking the
    next batch. Now the failed delivery waits on a timer and the others go through."""
    publisher = AmqpPublisher(amqp_url)
    await publisher.connect()
    handled: list[str] = []

    async def handle(envelopes: Sequence[Envelope[dict[str, str]]]) -> None:
        if any(e.data["v"] == "stuck" for e in envelopes):
            raise ConnectionResetError("this order's row is locked")
        handled.extend(e.data["v"] for e in envelopes)

    consumer = BatchConsumer(
        amqp_url,
        test_queue,
        Envelope[dict[str, str]],
        handle,
        publisher,
        prefetch=50,
        max_batch=1,
        backoff=RedeliveryBackoff(first=30, cap=30),
    )
    await consumer.start()
    try:
        await publish(amqp_url, "", test_queue.name, message("stuck"))
        await wait_until(lambda: consumer.waiting_to_retry == 1)
        started = time.monotonic()
        for index in range(20):
            await publish(amqp_url, "", test_queue.name, message(str(index)))
        await wait_until(lambda: len(handled) == 20, seconds=10)
        assert time.monotonic() - started < 10
    finally:
        await consumer.stop()
        await publisher.close()
    assert handled == [str(index) for index in range(20)]
    # The one still waiting went back to the queue when the consumer stopped: not lost.
    assert await queue_depth(amqp_url, test_queue.name) == 1


async def test_the_services_queues_dead_letter_at_least_once(amqp_url: str) -> None:
    """Every consumer queue is declared with at-least-once dead-lettering (and the overflow
    behaviour it needs): redeclaring one without it is refused as inequivalent. A queue left
    by an older version with other arguments stops a service's start with a clear error."""
    name = "processor.order-changed"
    async with RabbitBroker(amqp_url) as broker:
        await declare_topology(broker)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for queue in CONSUMERS:
            arguments = dict(consumer_queue(CONSUMERS[queue]).arguments or {})
            assert arguments["x-dead-letter-strategy"] == "at-least-once"
            assert arguments["x-overflow"] == "reject-publish"
        channel = await connection.channel()
        older = {k: v for k, v in (consumer_queue(CONSUMERS[name]).arguments or {}).items()}
        older.pop("x-dead-letter-strategy")
        older.pop("x-overflow")
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(name, durable=True, arguments=older)

        await delete_queues(amqp_url, name)
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments=older)
    try:
        with pytest.raises(TopologyMismatchError, match=r"processor\.order-changed exists with"):
            async with RabbitBroker(amqp_url) as broker:
                await declare_topology(broker)
    finally:
        await delete_queues(amqp_url, name)
        async with RabbitBroker(amqp_url) as broker:
            await declare_topology(broker)

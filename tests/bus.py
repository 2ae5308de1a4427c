"""A test's own view of the broker, through aio-pika: publish, record events, read DLQs."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from yarl import URL


async def publish(
    url: str,
    exchange: str,
    routing_key: str,
    body: bytes,
    *,
    message_id: str | None = None,
    headers: dict[str, Any] | None = None,
    signed: bool = True,
    reply_to: str | None = None,
) -> None:
    """Publish one persistent message (with the connection's user as its AMQP user-id,
    unless ``signed`` is false) and wait for the broker's confirm."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        target = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        await target.publish(
            aio_pika.Message(
                body,
                message_id=message_id,
                headers=headers,
                user_id=(URL(url).user or "guest") if signed else None,
                reply_to=reply_to,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )


async def delete_queues(url: str, *names: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)


async def queue_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (not those handed to a consumer and not yet settled)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        declared = await channel.declare_queue(queue, passive=True)
        return declared.declaration_result.message_count or 0


async def dead_letters(url: str, queue: str) -> list[AbstractIncomingMessage]:
    """Everything waiting in ``queue`` (acknowledged, so it is read once)."""
    found: list[AbstractIncomingMessage] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        target = await channel.get_queue(queue, ensure=True)
        while (message := await target.get(fail=False)) is not None:
            await message.ack()
            found.append(message)
    return found


class EventRecorder:
    """Collects every message published to an exchange while it is open."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._changed = asyncio.Condition()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            self.messages.append(json.loads(message.body))
        async with self._changed:
            self._changed.notify_all()

    def of_type(self, type_: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == type_]

    async def wait_for(
        self, predicate: Callable[[EventRecorder], bool], timeout: float = 20.0
    ) -> None:
        deadline = time.monotonic() + timeout
        async with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    types = [m.get("type") for m in self.messages]
                    raise AssertionError(f"timed out waiting; recorded so far: {types}")
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    continue


@asynccontextmanager
async def recording(url: str, exchange: str, binding: str = "#") -> AsyncIterator[EventRecorder]:
    recorder = EventRecorder()
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        target = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(target, routing_key=binding)
        await queue.consume(recorder._on_message)
        yield recorder


async def request(
    url: str, exchange: str, routing_key: str, body: bytes, *, timeout: float = 15.0
) -> dict[str, Any]:
    """Publish with ``reply_to`` and ``correlation_id`` and wait for the answer (RPC)."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        correlation_id = uuid.uuid4().hex
        target = await channel.get_exchange(exchange) if exchange else channel.default_exchange
        await target.publish(
            aio_pika.Message(
                body,
                reply_to=replies.name,
                correlation_id=correlation_id,
                user_id=URL(url).user or "guest",
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )
        async with asyncio.timeout(timeout):
            async with replies.iterator() as incoming:
                async for message in incoming:
                    async with message.process():
                        if message.correlation_id == correlation_id:
                            answer: dict[str, Any] = json.loads(message.body)
                            return answer
    raise AssertionError("no reply")

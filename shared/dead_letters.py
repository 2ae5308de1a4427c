"""Reading and replaying a dead-letter queue (``<queue>.dlq``), for ops.

A message lands there either from its consumer (with ``x-rejection-reason``,
``x-original-exchange`` and ``x-original-routing-key`` headers) or from the broker after too
many failed deliveries (with RabbitMQ's ``x-death`` header).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.topology import REJECTION_REASON_HEADER, dead_letters_of


@dataclass(frozen=True)
class DeadLetter:
    message_id: str | None
    reason: str
    exchange: str
    routing_key: str
    body: bytes


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def describe(message: AbstractIncomingMessage) -> DeadLetter:
    headers = message.headers or {}
    deaths = headers.get("x-death")
    first = deaths[0] if isinstance(deaths, list) and deaths else None
    death: dict[str, Any] = dict(first) if isinstance(first, dict) else {}
    if REJECTION_REASON_HEADER in headers:
        reason = _text(headers[REJECTION_REASON_HEADER])
    elif death:
        reason = (
            f"broker: {_text(death.get('reason', 'unknown'))} after {death.get('count')} deliveries"
        )
    else:
        reason = "unknown"
    routing_keys = death.get("routing-keys") or [""]
    return DeadLetter(
        message_id=message.message_id,
        reason=reason,
        exchange=_text(headers.get("x-original-exchange") or death.get("exchange") or ""),
        routing_key=_text(headers.get("x-original-routing-key") or routing_keys[0]),
        body=message.body,
    )


async def list_dead_letters(amqp_url: str, queue: str, limit: int = 100) -> list[DeadLetter]:
    """Look without taking: every message read is handed back to the queue."""
    found: list[DeadLetter] = []
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        dlq = await channel.get_queue(dead_letters_of(queue), ensure=True)
        held: list[AbstractIncomingMessage] = []
        while len(held) < limit and (message := await dlq.get(fail=False)) is not None:
            held.append(message)
            found.append(describe(message))
        for message in held:
            await message.nack(requeue=True)
    return found


async def replay_dead_letters(amqp_url: str, queue: str, limit: int = 1000) -> int:
    """Publish each dead letter again where it was first sent, then remove it from the DLQ."""
    replayed = 0
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        # A replay no queue takes is returned and fails here: the dead letter is kept.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        dlq = await channel.get_queue(dead_letters_of(queue), ensure=True)
        while replayed < limit and (message := await dlq.get(fail=False)) is not None:
            letter = describe(message)
            target = (
                await channel.get_exchange(letter.exchange)
                if letter.exchange
                else channel.default_exchange
            )
            await target.publish(
                aio_pika.Message(
                    message.body,
                    message_id=message.message_id,
                    correlation_id=message.correlation_id,
                    content_type=message.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"x-replayed-from": dead_letters_of(queue)},
                ),
                routing_key=letter.routing_key,
            )
            await message.ack()
            replayed += 1
    return replayed


async def dead_letter_counts(amqp_url: str, queues: list[str]) -> dict[str, int]:
    """How many messages wait in each queue's dead-letter queue (a passive look)."""
    counts: dict[str, int] = {}
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        for queue in queues:
            channel = await connection.channel()
            try:
                dlq = await channel.get_queue(dead_letters_of(queue), ensure=True)
            except aio_pika.exceptions.ChannelClosed:  # never declared here: none
                continue
            result = dlq.declaration_result
            counts[queue] = int(result.message_count or 0) if result is not None else 0
            await channel.close()
    return counts

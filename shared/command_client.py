"""For services that drive orders: publish a command and await its answer (request/reply).

The processor answers every command on the event bus and, when the command names a
``reply_to`` queue, there too with the caller's ``correlation_id``; this client uses that.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aio_pika
from yarl import URL

from shared.contracts import Envelope
from shared.topology import COMMANDS


class NoAnswerError(Exception):
    """No answer came in time (the processor may be down; the command may still be handled)."""


async def send_command(
    amqp_url: str,
    type_: str,
    data: dict[str, Any],
    *,
    source: str,
    answer_within: float = 30.0,
    exchange: str = COMMANDS.name,
) -> Envelope[dict[str, Any]]:
    """Publish ``type_`` (persistent, confirmed) and return the answer's envelope."""
    envelope = Envelope[dict[str, Any]](type=type_, source=source, data=data)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        # A command no queue takes is returned and fails here, rather than vanishing.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        replies = await channel.declare_queue(exclusive=True, auto_delete=True)
        correlation_id = uuid.uuid4().hex
        target = await channel.get_exchange(exchange)
        await target.publish(
            aio_pika.Message(
                envelope.model_dump_json().encode(),
                message_id=str(envelope.id),
                reply_to=replies.name,
                user_id=broker_user(amqp_url),
                correlation_id=correlation_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=type_,
        )
        try:
            async with asyncio.timeout(answer_within), replies.iterator() as incoming:
                async for message in incoming:
                    async with message.process():
                        if message.correlation_id == correlation_id:
                            return Envelope[dict[str, Any]].model_validate(json.loads(message.body))
        except TimeoutError:
            pass
    raise NoAnswerError(f"no answer to {type_} within {answer_within:g} s")


async def publish_command(
    amqp_url: str, type_: str, data: dict[str, Any], *, source: str
) -> Envelope[dict[str, Any]]:
    """Publish a command that has no answer (``poller.sync``); returns what was sent."""
    envelope = Envelope[dict[str, Any]](type=type_, source=source, data=data)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        # A command no queue takes is returned and fails here, rather than vanishing.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        target = await channel.get_exchange(COMMANDS.name)
        await target.publish(
            aio_pika.Message(
                envelope.model_dump_json().encode(),
                message_id=str(envelope.id),
                user_id=broker_user(amqp_url),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=type_,
        )
    return envelope


def broker_user(amqp_url: str) -> str:
    """The user the connection logs in as: a command says who sent it (the broker refuses a
    user-id other than the connection's own, so the processor can trust it)."""
    return URL(amqp_url).user or "guest"

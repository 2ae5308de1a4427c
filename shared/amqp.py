"""Publishing with publisher confirms on a robust aio-pika connection of its own.

The outbox relays, the poller and dead-lettering publish every message a service sends.
FastStream's publish path (middlewares, dependency resolution, a correlation id per message)
costs more than the publish itself, so these hot paths go to the AMQP channel directly;
FastStream keeps the subscribers and the application's life cycle.

Messages are written in batches: aiormq's ``basic_publish`` costs about 70 µs of CPU a
message (a lock, a timeout, a task and a socket write each), which made publishing a quarter
of the processor's time. :meth:`AmqpPublisher.publish_many` frames a whole batch under the
channel's lock, numbered as ``basic_publish`` numbers them, writes it at once and waits for
every confirm: 23 µs a message. It uses aiormq's channel attributes (its lock, delivery tag,
pending confirmations and write queue), so aiormq is pinned to the 7.x series it was written
against, and the publishing tests exercise it against a real broker.

A message the pipeline's own consumers must receive is published ``mandatory``: if no queue
takes it (an operator deleted the queue, a binding is missing), the broker returns it and the
publish fails, so the outbox keeps it, rather than confirming it and dropping it. Every
confirm is awaited for at most ``confirm_timeout`` seconds: a broker that takes the message
and never answers fails the publish, which is then sent again (at least once).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import ChannelFrame, FrameType
from pamqp.body import ContentBody
from pamqp.commands import Basic
from pamqp.header import ContentHeader

#: How the publishing connection of every service is named at the broker.
PUBLISHER_CONNECTION_NAME = "lengow-orders publisher"

#: AMQP delivery mode of a message the broker writes to disk.
PERSISTENT = 2


@dataclass(frozen=True)
class Outgoing:
    """One persistent message to publish."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, Any] | None = None
    content_type: str | None = "application/json"
    #: Returned by the broker, and failed, when no queue takes it.
    mandatory: bool = True

    def properties(self, message_id: str) -> Basic.Properties:
        return Basic.Properties(
            delivery_mode=PERSISTENT,
            message_id=message_id,
            correlation_id=self.correlation_id,
            reply_to=self.reply_to,
            headers=dict(self.headers) if self.headers else None,
            content_type=self.content_type,
        )


class UnroutableMessageError(Exception):
    """The broker returned a mandatory message: no queue is bound for its routing key."""


class AmqpPublisher:
    """Persistent messages, each awaited until the broker confirms it (or raises)."""

    def __init__(self, url: str, *, confirm_timeout: float = 30.0) -> None:
        self._url = url
        self._confirm_timeout = confirm_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None

    async def connect(self) -> None:
        if self._connection is None:
            # A robust connection reconnects by itself after a broker restart. Named, so that
            # ops (and the fault suite) can tell the publishing connection in the broker's list.
            self._connection = await aio_pika.connect_robust(
                self._url, client_properties={"connection_name": PUBLISHER_CONNECTION_NAME}
            )
            # on_return_raises: a returned message fails its confirm (aiormq's PublishError).
            self._channel = await self._connection.channel(
                publisher_confirms=True, on_return_raises=True
            )

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = None

    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        message_id: str | None = None,
        correlation_id: str | None = None,
        reply_to: str | None = None,
        headers: Mapping[str, Any] | None = None,
        content_type: str | None = "application/json",
        mandatory: bool = True,
    ) -> None:
        """Returns once the broker has the message; raises if it refused it, returned it
        (mandatory and unroutable) or went away."""
        await self.publish_many(
            [
                Outgoing(
                    exchange,
                    routing_key,
                    body,
                    message_id=message_id,
                    correlation_id=correlation_id,
                    reply_to=reply_to,
                    headers=headers,
                    content_type=content_type,
                    mandatory=mandatory,
                )
            ]
        )

    async def publish_many(self, messages: Sequence[Outgoing]) -> None:
        """Returns once the broker has every message; raises if it refused one or went away
        (some may have been taken: the caller publishes them again, at least once)."""
        if self._channel is None:
            raise RuntimeError("the publisher is not connected")
        if not messages:
            return
        channel = await self._channel.get_underlay_channel()
        assert isinstance(channel, aiormq.Channel), "aio-pika runs on aiormq's channel"
        frames: list[FrameType] = []
        # aiormq matches a returned message to its confirm by message id.
        message_ids = [message.message_id or uuid.uuid4().hex for message in messages]
        for message, message_id in zip(messages, message_ids, strict=True):
            frames.append(
                Basic.Publish(
                    exchange=message.exchange,
                    routing_key=message.routing_key,
                    mandatory=message.mandatory,
                )
            )
            frames.append(
                ContentHeader(
                    properties=message.properties(message_id), body_size=len(message.body)
                )
            )
            body, size = message.body, channel.max_content_size
            frames.extend(ContentBody(body[i : i + size]) for i in range(0, len(body), size))
        # Framed before any number is taken: a batch that cannot be framed fails without
        # disturbing the channel's numbering of confirms.
        payload = ChannelFrame.marshall(channel.number, frames)
        async with channel.lock:
            # Numbered as basic_publish numbers them: the broker confirms in publish order.
            first = channel.delivery_tag + 1
            tags = range(first, first + len(messages))
            confirms = [channel.create_future() for _ in tags]
            channel.confirmations.update(zip(tags, confirms, strict=True))
            channel.message_id_delivery_tag.update(zip(message_ids, tags, strict=True))
            channel.delivery_tag = tags[-1]
            try:
                await channel.write_queue.put(payload)
            except BaseException:
                # Never written: give the numbers back, as basic_publish does.
                channel.delivery_tag = first - 1
                for tag, confirm in zip(tags, confirms, strict=True):
                    channel.confirmations.pop(tag, None)
                    confirm.cancel()
                _forget(channel, message_ids, tags)
                raise
        try:
            # A refused message fails its confirm (DeliveryError), a returned one too
            # (PublishError); a closed channel fails them all.
            async with asyncio.timeout(self._confirm_timeout):
                results = await asyncio.gather(*confirms, return_exceptions=True)
        except TimeoutError:
            for confirm in confirms:
                confirm.cancel()
            raise TimeoutError(
                f"the broker confirmed none or part of {len(messages)} messages"
                f" within {self._confirm_timeout:g} s"
            ) from None
        finally:
            _forget(channel, message_ids, tags)
        _raise_first_failure(messages, results)


def _forget(channel: aiormq.Channel, message_ids: Sequence[str], tags: range) -> None:
    for message_id, tag in zip(message_ids, tags, strict=True):
        if channel.message_id_delivery_tag.get(message_id) == tag:
            del channel.message_id_delivery_tag[message_id]


def _raise_first_failure(messages: Sequence[Outgoing], results: Sequence[object]) -> None:
    for message, result in zip(messages, results, strict=True):
        if isinstance(result, aiormq.exceptions.PublishError):
            raise UnroutableMessageError(
                f"no queue takes {message.routing_key!r} on exchange {message.exchange!r}:"
                " the broker returned the message"
            )
        if isinstance(result, BaseException):
            raise result

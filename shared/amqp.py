"""Publishing on aio-pika directly, with publisher confirms, on a connection of its own.

The outbox relay and dead-lettering publish every message a service sends. FastStream's
publish path (middlewares, dependency resolution, a correlation id per message) costs more
than the publish itself, so these hot paths go straight to aio-pika; FastStream keeps the
subscribers and the application's life cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractExchange, AbstractRobustChannel, AbstractRobustConnection


class AmqpPublisher:
    """Persistent messages, each awaited until the broker confirms it (or raises)."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}

    async def connect(self) -> None:
        if self._connection is None:
            # A robust connection reconnects by itself after a broker restart.
            self._connection = await aio_pika.connect_robust(self._url)
            self._channel = await self._connection.channel(publisher_confirms=True)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
        self._connection = self._channel = None
        self._exchanges.clear()

    async def _exchange(self, name: str) -> AbstractExchange:
        if self._channel is None:
            raise RuntimeError("the publisher is not connected")
        if name == "":
            return self._channel.default_exchange
        exchange = self._exchanges.get(name)
        if exchange is None:
            # Declared by ``declare_topology``; looked up once, not declared again.
            exchange = await self._channel.get_exchange(name, ensure=False)
            self._exchanges[name] = exchange
        return exchange

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
    ) -> None:
        """Returns once the broker has the message; raises if it refused it or went away."""
        target = await self._exchange(exchange)
        await target.publish(
            aio_pika.Message(
                body,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                message_id=message_id,
                correlation_id=correlation_id,
                reply_to=reply_to,
                headers=dict(headers) if headers else None,
                content_type=content_type,
            ),
            routing_key=routing_key,
            # An event nobody subscribes to yet is not an error: no return to process.
            mandatory=False,
        )

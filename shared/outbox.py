"""The transactional outbox: messages written with the state they announce, in one
transaction, and the relay that publishes them once the broker confirmed each. The outbox is
in PostgreSQL, and in memory for the handlers' unit tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import asyncpg

from shared.amqp import AmqpPublisher, Outgoing
from shared.background import BackgroundTask
from shared.contracts import Envelope
from shared.database import Connection
from shared.logging import get_logger
from shared.topology import must_be_routed

log = get_logger(__name__)


class Outbox(Protocol):
    #: How many messages were added: the unit of work wakes the relay when any was.
    added: int

    async def add(
        self,
        exchange: str,
        envelope: Envelope[Any],
        *,
        routing_key: str | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        message_id: uuid.UUID | None = None,
    ) -> None:
        """``message_id`` defaults to the envelope's; a copy of one envelope sent elsewhere
        (a reply) needs its own."""
        ...

    async def add_many(self, exchange: str, envelopes: Sequence[Envelope[Any]]) -> None: ...


class PostgresOutbox:
    """Writes outgoing messages in the caller's transaction; the relay publishes them."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.added = 0

    async def add(
        self,
        exchange: str,
        envelope: Envelope[Any],
        *,
        routing_key: str | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        message_id: uuid.UUID | None = None,
    ) -> None:
        """``message_id`` defaults to the envelope's; a copy of one envelope sent elsewhere
        (a reply) needs its own."""
        await self._conn.execute(
            "INSERT INTO outbox (message_id, exchange, routing_key, body, reply_to,"
            " correlation_id) VALUES ($1, $2, $3, $4, $5, $6)",
            message_id or envelope.id,
            exchange,
            routing_key or envelope.type,
            envelope.model_dump_json().encode(),
            reply_to,
            correlation_id or envelope.correlation_id,
        )
        self.added += 1

    async def add_many(self, exchange: str, envelopes: Sequence[Envelope[Any]]) -> None:
        if not envelopes:
            return
        await self._conn.execute(
            "INSERT INTO outbox (message_id, exchange, routing_key, body, correlation_id)"
            " SELECT id, $1, key, body, cid FROM unnest($2::uuid[], $3::text[], $4::bytea[],"
            " $5::text[]) AS r(id, key, body, cid)",
            exchange,
            [e.id for e in envelopes],
            [e.type for e in envelopes],
            [e.model_dump_json().encode() for e in envelopes],
            [e.correlation_id for e in envelopes],
        )
        self.added += len(envelopes)


@dataclass(frozen=True)
class OutboxMessage:
    """One message of the in-memory outbox, as the relay would publish it."""

    exchange: str
    routing_key: str
    envelope: Envelope[Any]
    message_id: uuid.UUID
    reply_to: str | None = None
    correlation_id: str | None = None


class MemoryOutbox:
    """The messages in a list that the caller keeps (and restores on a rollback)."""

    def __init__(self, messages: list[OutboxMessage]) -> None:
        self._messages = messages
        self.added = 0

    async def add(
        self,
        exchange: str,
        envelope: Envelope[Any],
        *,
        routing_key: str | None = None,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        message_id: uuid.UUID | None = None,
    ) -> None:
        self._messages.append(
            OutboxMessage(
                exchange,
                routing_key or envelope.type,
                envelope,
                message_id or envelope.id,
                reply_to,
                correlation_id or envelope.correlation_id,
            )
        )
        self.added += 1

    async def add_many(self, exchange: str, envelopes: Sequence[Envelope[Any]]) -> None:
        for envelope in envelopes:
            await self.add(exchange, envelope)


class OutboxRelay(BackgroundTask):
    """Publishes outbox rows with publisher confirms, then marks them published.

    Rows are claimed for ``claim_seconds`` (``FOR UPDATE SKIP LOCKED``, so replicas share the
    work) in a statement of their own; the publish waits for the broker without any
    transaction or row lock held. A crash after publishing and before marking means a row is
    published again once its claim expires, which the consumers' inboxes absorb
    (at-least-once, never lost).
    """

    name = "outbox-relay"

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: AmqpPublisher,
        *,
        poll_interval: float = 0.5,
        batch_size: int = 1000,
        claim_seconds: float = 120.0,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._poll_interval = poll_interval
        self._batch_size = batch_size
        self._claim = timedelta(seconds=claim_seconds)
        self._wake = asyncio.Event()
        super().__init__()
        self.published = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            try:
                while await self.publish_pending() == self._batch_size:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception as error:
                # Broker or database away, or a message no queue takes: the rows stay
                # unpublished and are retried.
                log.error("outbox.relay_failed", error=str(error), error_type=type(error).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll_interval)
            self._wake.clear()

    async def publish_pending(self) -> int:
        """Publish one batch of unpublished rows; returns how many were published."""
        rows = await self._pool.fetch(
            "UPDATE outbox SET claimed_until = now() + $2::interval WHERE id IN ("
            " SELECT id FROM outbox WHERE published_at IS NULL"
            " AND (claimed_until IS NULL OR claimed_until < now())"
            " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, message_id, exchange, routing_key, body, reply_to, correlation_id",
            self._batch_size,
            self._claim,
        )
        if not rows:
            return 0
        rows = sorted(rows, key=lambda row: row["id"])
        ids = [row["id"] for row in rows]
        try:
            # One write, every confirm awaited; a failure aborts the batch and nothing is marked.
            await self._publisher.publish_many([_outgoing(row) for row in rows])
        except BaseException:
            with contextlib.suppress(Exception):
                await self._pool.execute(
                    "UPDATE outbox SET claimed_until = NULL WHERE id = ANY($1::bigint[])", ids
                )
            raise
        await self._pool.execute(
            "UPDATE outbox SET published_at = now(), claimed_until = NULL"
            " WHERE id = ANY($1::bigint[])",
            ids,
        )
        self.published += len(rows)
        return len(rows)

    async def pending(self) -> int:
        count: int = await self._pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        return count


def _outgoing(row: asyncpg.Record) -> Outgoing:
    return Outgoing(
        row["exchange"],
        row["routing_key"],
        bytes(row["body"]),
        message_id=str(row["message_id"]),
        correlation_id=row["correlation_id"],
        reply_to=row["reply_to"],
        # A reply whose caller has gone is not lost: the answer is on the event bus too.
        mandatory=must_be_routed(row["exchange"], row["routing_key"]),
    )

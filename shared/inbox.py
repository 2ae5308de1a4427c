"""The inbox: the ids of the messages a service handled, written in the handler's
transaction, so that a delivery seen again (at-least-once) changes nothing. In PostgreSQL,
and in memory for the handlers' unit tests."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from shared.contracts import Envelope
from shared.database import Connection


class Inbox(Protocol):
    async def first_delivery(self, envelope: Envelope[Any]) -> bool: ...

    async def first_deliveries(self, envelopes: Sequence[Envelope[Any]]) -> set[uuid.UUID]:
        """Record the envelopes' ids; returns those not seen before."""
        ...


class PostgresInbox:
    """Remembers handled message ids, inside the handler's transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def first_delivery(self, envelope: Envelope[Any]) -> bool:
        return envelope.id in await self.first_deliveries([envelope])

    async def first_deliveries(self, envelopes: Sequence[Envelope[Any]]) -> set[uuid.UUID]:
        """Record the envelopes' ids; returns those not seen before."""
        rows = await self._conn.fetch(
            "INSERT INTO inbox (message_id, message_type)"
            " SELECT * FROM unnest($1::uuid[], $2::text[])"
            " ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
            [envelope.id for envelope in envelopes],
            [envelope.type for envelope in envelopes],
        )
        return {row["message_id"] for row in rows}


class MemoryInbox:
    """The ids in a set that the caller keeps (and restores on a rollback)."""

    def __init__(self, seen: set[uuid.UUID]) -> None:
        self._seen = seen

    async def first_delivery(self, envelope: Envelope[Any]) -> bool:
        return envelope.id in await self.first_deliveries([envelope])

    async def first_deliveries(self, envelopes: Sequence[Envelope[Any]]) -> set[uuid.UUID]:
        fresh = {envelope.id for envelope in envelopes} - self._seen
        self._seen |= fresh
        return fresh

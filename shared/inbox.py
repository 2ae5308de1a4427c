"""The inbox: the ids of the messages a service handled, written in the handler's
transaction, so that a delivery seen again (at-least-once) changes nothing."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from shared.contracts import Envelope
from shared.database import Connection


class Inbox:
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

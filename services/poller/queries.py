"""The poller's read queries, for ordersctl: no one else reads its tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.database import Connection
from shared.queries import first, rows, table

Row = dict[str, Any]


class PollerQueries:
    def __init__(self, conn: Connection, schema: str = "poller") -> None:
        self._conn = conn
        self._actions = table(schema, "actions")
        self._imports = table(schema, "imports")
        self._quarantine = table(schema, "quarantined_orders")
        self._finds = table(schema, "catchup_finds")

    async def actions(self, command_ids: list[str]) -> dict[str, Row]:
        """The marketplace action of each command: its state and Lengow's errors."""
        found = await rows(
            self._conn,
            f"SELECT command_id, state, errors FROM {self._actions}"
            " WHERE command_id = ANY($1::text[])",
            command_ids,
        )
        return {row.pop("command_id"): row for row in found}

    async def refused_actions(self, since: datetime) -> list[Row]:
        """Actions the marketplace refused (or that failed for good), with Lengow's reason."""
        return await rows(
            self._conn,
            "SELECT marketplace, marketplace_order_id, action_type, command_id, errors,"
            f" updated_at FROM {self._actions} WHERE state = 'failed' AND updated_at >= $1"
            " ORDER BY updated_at",
            since,
        )

    async def lengow_import(self, marketplace: str, order_id: str) -> Row | None:
        return await first(
            self._conn,
            "SELECT merchant_order_id, state, attempts, last_error, done_at"
            f" FROM {self._imports} WHERE marketplace = $1 AND marketplace_order_id = $2",
            marketplace,
            order_id,
        )

    async def quarantined(self) -> list[Row]:
        return await rows(
            self._conn,
            "SELECT source, marketplace_order_id, kind, reason, first_seen, last_seen, polls"
            f" FROM {self._quarantine} ORDER BY first_seen",
        )

    async def catchup_finds(self, since: datetime, until: datetime) -> list[Row]:
        """What catch-ups found that the 15-minute polls had missed."""
        return await rows(
            self._conn,
            "SELECT source, marketplace_order_id, kind, lengow_status, found_at"
            f" FROM {self._finds} WHERE found_at >= $1 AND found_at < $2 ORDER BY found_at",
            since,
            until,
        )

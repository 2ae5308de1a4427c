"""The processor's read queries, for ordersctl and devstack: no one else reads its tables."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from services.processor.deadlines import PENDING_ON
from services.processor.repository import pending_deadlines
from shared.database import Connection
from shared.queries import first, rows, table

Row = dict[str, Any]


class ProcessorQueries:
    def __init__(self, conn: Connection, schema: str = "processor") -> None:
        self._conn = conn
        self._orders = table(schema, "orders")
        self._transitions = table(schema, "order_transitions")
        self._commands = table(schema, "commands")
        self._alerts = table(schema, "deadline_alerts")

    async def status_counts(self) -> list[Row]:
        return await rows(
            self._conn,
            f"SELECT lengow_status, count(*) AS n FROM {self._orders}"
            " GROUP BY lengow_status ORDER BY n DESC",
        )

    async def order(self, marketplace: str, order_id: str) -> Row | None:
        return await first(
            self._conn,
            "SELECT lengow_status, manomano_status, is_delivered_by_marketplace, version,"
            " source_updated_at, acceptance_due_at, shipment_due_at, snapshot"
            f" FROM {self._orders} WHERE marketplace = $1 AND marketplace_order_id = $2",
            marketplace,
            order_id,
        )

    async def history(self, marketplace: str, order_id: str) -> list[Row]:
        return await rows(
            self._conn,
            "SELECT observed_at, from_status, to_status, kind, cause, command_id, reason"
            f" FROM {self._transitions} WHERE marketplace = $1 AND marketplace_order_id = $2"
            " ORDER BY id",
            marketplace,
            order_id,
        )

    async def commands(self, marketplace: str, order_id: str) -> list[Row]:
        return await rows(
            self._conn,
            "SELECT command_id, command_type, outcome, reason, received_at, completed_at"
            f" FROM {self._commands} WHERE marketplace = $1 AND marketplace_order_id = $2"
            " ORDER BY received_at",
            marketplace,
            order_id,
        )

    async def deadlines(self, marketplace: str, order_id: str) -> list[Row]:
        """Each deadline of the order, whether it still waits on the seller, what was said."""
        order = await self.order(marketplace, order_id)
        if order is None:
            return []
        said = await rows(
            self._conn,
            f"SELECT deadline, phase, said_at FROM {self._alerts}"
            " WHERE marketplace = $1 AND marketplace_order_id = $2",
            marketplace,
            order_id,
        )
        return [
            {
                "deadline": deadline.value,
                "due_at": order[f"{deadline.value}_due_at"],
                "pending": order["lengow_status"] in {s.value for s in statuses},
                "said": ", ".join(
                    f"{row['phase']} at {row['said_at']:%Y-%m-%d %H:%M}"
                    for row in said
                    if row["deadline"] == deadline.value
                )
                or None,
            }
            for deadline, statuses in PENDING_ON.items()
        ]

    async def orders(
        self, marketplace: str, status: str | None, source: str | None, limit: int
    ) -> list[Row]:
        return await rows(
            self._conn,
            "SELECT marketplace_order_id, lengow_status, manomano_status,"
            " snapshot->>'lengow_source' AS source,"
            " is_delivered_by_marketplace AS fulfillment, source_updated_at"
            f" FROM {self._orders} WHERE marketplace = $1"
            " AND ($2::text IS NULL OR lengow_status = $2)"
            " AND ($3::text IS NULL OR snapshot->>'lengow_source' = $3)"
            " ORDER BY source_updated_at DESC LIMIT $4",
            marketplace,
            status,
            source,
            limit,
        )

    async def near_deadlines(self, now: datetime, lead: timedelta) -> list[Row]:
        """Orders waiting on the seller within ``lead`` of a deadline or past it, the most
        urgent first."""
        return await rows(
            self._conn,
            f"SELECT * FROM ({pending_deadlines(self._orders)}) AS p WHERE due_at <= $1"
            " ORDER BY due_at",
            now + lead,
        )

    async def stuck(self, statuses: list[str], older_than: datetime) -> list[Row]:
        """Orders in one of ``statuses`` that Lengow has not changed since ``older_than``."""
        return await rows(
            self._conn,
            "SELECT marketplace, marketplace_order_id, lengow_status, source_updated_at"
            f" FROM {self._orders} WHERE lengow_status = ANY($1::text[])"
            " AND source_updated_at < $2 ORDER BY source_updated_at",
            statuses,
            older_than,
        )

    async def rejected_commands(self, since: datetime) -> list[Row]:
        return await rows(
            self._conn,
            "SELECT marketplace, marketplace_order_id, command_id, command_type, outcome,"
            f" reason, received_at FROM {self._commands}"
            " WHERE outcome = 'rejected' AND received_at >= $1"
            " ORDER BY received_at",
            since,
        )

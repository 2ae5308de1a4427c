"""PostgreSQL adapter of the processor: orders, their history, and the unit of work."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.processor.lifecycle import OrderState
from shared.contracts import MANOMANO_STATUS, LengowStatus, OrderRef, OrderSnapshot
from shared.database import Connection
from shared.unit_of_work import UnitOfWork


class OrderRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def lock(self, ref: OrderRef) -> None:
        """Serialise work on one order, including its creation, until the transaction ends."""
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
            f"order:{ref.marketplace}:{ref.marketplace_order_id}",
        )

    async def get(self, ref: OrderRef) -> OrderState | None:
        row = await self._conn.fetchrow(
            "SELECT lengow_status, source_updated_at, version, shipment_announced FROM orders"
            " WHERE marketplace = $1 AND marketplace_order_id = $2",
            ref.marketplace,
            ref.marketplace_order_id,
        )
        if row is None:
            return None
        return OrderState(
            status=LengowStatus(row["lengow_status"]),
            source_updated_at=row["source_updated_at"],
            version=row["version"],
            shipment_announced=row["shipment_announced"],
        )

    async def save(self, state: OrderState, snapshot: OrderSnapshot) -> None:
        await self._conn.execute(
            """
            INSERT INTO orders AS o (marketplace, marketplace_order_id, lengow_status,
                manomano_status, is_delivered_by_marketplace, snapshot, source_updated_at,
                version, shipment_announced)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
            ON CONFLICT (marketplace, marketplace_order_id) DO UPDATE SET
                lengow_status = excluded.lengow_status,
                manomano_status = excluded.manomano_status,
                is_delivered_by_marketplace = excluded.is_delivered_by_marketplace,
                snapshot = excluded.snapshot,
                source_updated_at = excluded.source_updated_at,
                version = excluded.version,
                shipment_announced = excluded.shipment_announced,
                updated_at = now()
            """,
            snapshot.marketplace,
            snapshot.marketplace_order_id,
            state.status.value,
            MANOMANO_STATUS.get(state.status),
            snapshot.is_delivered_by_marketplace,
            snapshot.model_dump(mode="json"),
            state.source_updated_at,
            state.version,
            state.shipment_announced,
        )

    async def add_transition(
        self,
        ref: OrderRef,
        *,
        from_status: LengowStatus | None,
        to_status: LengowStatus,
        kind: str,
        observed_at: datetime,
        message_id: uuid.UUID,
        reason: str | None = None,
        command_id: str | None = None,
    ) -> None:
        await self._conn.execute(
            "INSERT INTO order_transitions (marketplace, marketplace_order_id, from_status,"
            " to_status, kind, cause, observed_at, message_id, reason, command_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            ref.marketplace,
            ref.marketplace_order_id,
            from_status.value if from_status else None,
            to_status.value,
            kind,
            "command" if command_id else "observed",
            observed_at,
            message_id,
            reason,
            command_id,
        )


@dataclass(frozen=True)
class StoredCommand:
    command_id: str
    outcome: str
    answer_type: str
    answer: dict[str, Any]


class CommandRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def get(self, command_id: str) -> StoredCommand | None:
        row = await self._conn.fetchrow(
            "SELECT command_id, outcome, answer_type, answer FROM commands WHERE command_id = $1",
            command_id,
        )
        if row is None:
            return None
        return StoredCommand(row["command_id"], row["outcome"], row["answer_type"], row["answer"])

    async def add(
        self,
        *,
        command_id: str,
        command_type: str | None,
        ref: OrderRef | None,
        arguments: dict[str, Any],
        outcome: str,
        reason: str | None,
        answer_type: str,
        answer: dict[str, Any],
        message_id: uuid.UUID | None,
    ) -> None:
        await self._conn.execute(
            "INSERT INTO commands (command_id, command_type, marketplace, marketplace_order_id,"
            " arguments, outcome, reason, answer_type, answer, message_id)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            command_id,
            command_type or "unknown",
            ref.marketplace if ref else None,
            ref.marketplace_order_id if ref else None,
            arguments,
            outcome,
            reason,
            answer_type,
            answer,
            message_id,
        )

    async def awaiting(self, ref: OrderRef, command_types: list[str]) -> str | None:
        """The oldest accepted command of these types whose outcome was not observed yet."""
        value: str | None = await self._conn.fetchval(
            "SELECT command_id FROM commands WHERE marketplace = $1"
            " AND marketplace_order_id = $2 AND outcome = 'accepted' AND completed_at IS NULL"
            " AND command_type = ANY($3::text[]) ORDER BY received_at LIMIT 1",
            ref.marketplace,
            ref.marketplace_order_id,
            command_types,
        )
        return value

    async def complete(self, command_id: str) -> None:
        await self._conn.execute(
            "UPDATE commands SET completed_at = now() WHERE command_id = $1", command_id
        )


class ProcessorUnitOfWork(UnitOfWork):
    orders: OrderRepository
    commands: CommandRepository

    def bind(self, conn: Connection) -> None:
        self.orders = OrderRepository(conn)
        self.commands = CommandRepository(conn)

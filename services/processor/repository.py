"""PostgreSQL adapter of the processor: orders, their history, and the unit of work."""

from __future__ import annotations

import uuid
from datetime import datetime

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
    ) -> None:
        await self._conn.execute(
            "INSERT INTO order_transitions (marketplace, marketplace_order_id, from_status,"
            " to_status, kind, cause, observed_at, message_id, reason)"
            " VALUES ($1, $2, $3, $4, $5, 'observed', $6, $7, $8)",
            ref.marketplace,
            ref.marketplace_order_id,
            from_status.value if from_status else None,
            to_status.value,
            kind,
            observed_at,
            message_id,
            reason,
        )


class ProcessorUnitOfWork(UnitOfWork):
    orders: OrderRepository

    def bind(self, conn: Connection) -> None:
        self.orders = OrderRepository(conn)

"""PostgreSQL adapter of the processor: orders, their history, and the unit of work; and the
protocols the handlers see them through (``memory.py`` is the other implementation)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.processor.deadlines import PENDING_ON, DueDates
from services.processor.lifecycle import SETTLED_STATUSES, OrderState
from shared.contracts import (
    MANOMANO_STATUS,
    Address,
    Deadline,
    LengowStatus,
    OrderRef,
    OrderSnapshot,
)
from shared.database import Connection
from shared.inbox import Inbox
from shared.retention import RetentionRule
from shared.unit_of_work import UnitOfWork, Work


class Orders(Protocol):
    async def lock(self, ref: OrderRef) -> None:
        """Serialise work on one order, including its creation, until the transaction ends."""
        ...

    async def lock_many(self, keys: list[tuple[str, str]]) -> None: ...

    async def get(self, ref: OrderRef) -> OrderState | None: ...

    async def get_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], OrderState]: ...

    async def save_many(
        self,
        saved: dict[tuple[str, str], tuple[OrderState, OrderSnapshot]],
        due: Mapping[tuple[str, str], DueDates] | None = None,
    ) -> None: ...

    async def add_transitions(self, transitions: list[Transition]) -> None: ...


class Commands(Protocol):
    async def get(self, command_id: str) -> StoredCommand | None: ...

    async def add(self, command: AnsweredCommand) -> None: ...

    async def in_flight(self, ref: OrderRef, command_type: str) -> list[InFlightCommand]:
        """The accepted commands of this type on the order whose action has neither reached
        its status nor failed, oldest first."""
        ...

    async def awaiting_many(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """Per order, the accepted commands (id, type) whose outcome was not observed yet,
        oldest first."""
        ...

    async def complete_many(self, command_ids: list[str]) -> None: ...

    async def mark_failed(self, command_id: str, errors: list[str]) -> bool:
        """False when it was already marked."""
        ...


class Rules(Protocol):
    async def get(self, marketplace: str) -> dict[str, Any] | None: ...

    async def save(
        self, marketplace: str, source: str, rules: dict[str, Any], fetched_at: datetime
    ) -> bool:
        """False when a newer read is already stored."""
        ...


class ProcessorWork(Work, Protocol):
    """One transaction over the processor's stores, as the handlers use it."""

    @property
    def inbox(self) -> Inbox: ...

    @property
    def orders(self) -> Orders: ...

    @property
    def commands(self) -> Commands: ...

    @property
    def rules(self) -> Rules: ...


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

    async def lock_many(self, keys: list[tuple[str, str]]) -> None:
        """Lock several orders; sorted keys, so concurrent batches cannot deadlock."""
        await self._conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('order:' || m || ':' || i, 0))"
            " FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS k(m, i, n) ORDER BY n",
            [key[0] for key in sorted(keys)],
            [key[1] for key in sorted(keys)],
        )

    async def get_many(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], OrderState]:
        rows = await self._conn.fetch(
            "SELECT o.marketplace, o.marketplace_order_id, o.lengow_status,"
            " o.source_updated_at, o.version, o.shipment_announced FROM orders o"
            " JOIN unnest($1::text[], $2::text[]) AS k(m, i)"
            " ON o.marketplace = k.m AND o.marketplace_order_id = k.i",
            [key[0] for key in keys],
            [key[1] for key in keys],
        )
        return {
            (row["marketplace"], row["marketplace_order_id"]): OrderState(
                status=LengowStatus(row["lengow_status"]),
                source_updated_at=row["source_updated_at"],
                version=row["version"],
                shipment_announced=row["shipment_announced"],
            )
            for row in rows
        }

    async def save_many(
        self,
        saved: dict[tuple[str, str], tuple[OrderState, OrderSnapshot]],
        due: Mapping[tuple[str, str], DueDates] | None = None,
    ) -> None:
        if not saved:
            return
        rows = [
            (
                snapshot.marketplace,
                snapshot.marketplace_order_id,
                state.status.value,
                MANOMANO_STATUS.get(state.status),
                snapshot.is_delivered_by_marketplace,
                snapshot.model_dump_json(),
                state.source_updated_at,
                state.version,
                state.shipment_announced,
                *_due_columns((due or {}).get(key)),
            )
            for key, (state, snapshot) in saved.items()
        ]
        # One statement for the whole batch; the snapshot goes as JSON text, serialised by
        # pydantic rather than by the json codec.
        await self._conn.execute(
            """
            INSERT INTO orders AS o (marketplace, marketplace_order_id, lengow_status,
                manomano_status, is_delivered_by_marketplace, snapshot, source_updated_at,
                version, shipment_announced, acceptance_due_at, shipment_due_at)
            SELECT m, i, s, ms, d, j::jsonb, u, v, a, ad, sd FROM unnest($1::text[],
                $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::timestamptz[],
                $8::int[], $9::bool[], $10::timestamptz[], $11::timestamptz[])
                AS r(m, i, s, ms, d, j, u, v, a, ad, sd)
            ON CONFLICT (marketplace, marketplace_order_id) DO UPDATE SET
                lengow_status = excluded.lengow_status,
                manomano_status = excluded.manomano_status,
                is_delivered_by_marketplace = excluded.is_delivered_by_marketplace,
                snapshot = excluded.snapshot,
                source_updated_at = excluded.source_updated_at,
                version = excluded.version,
                shipment_announced = excluded.shipment_announced,
                acceptance_due_at = excluded.acceptance_due_at,
                shipment_due_at = excluded.shipment_due_at,
                updated_at = now()
            """,
            *_columns(rows),
        )

    async def add_transitions(self, transitions: list[Transition]) -> None:
        if not transitions:
            return
        rows = [
            (
                t.ref[0],
                t.ref[1],
                t.from_status.value if t.from_status else None,
                t.to_status.value,
                t.kind,
                "command" if t.command_id else "observed",
                t.observed_at,
                t.message_id,
                t.reason,
                t.command_id,
            )
            for t in transitions
        ]
        await self._conn.execute(
            "INSERT INTO order_transitions (marketplace, marketplace_order_id, from_status,"
            " to_status, kind, cause, observed_at, message_id, reason, command_id)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],"
            " $6::text[], $7::timestamptz[], $8::uuid[], $9::text[], $10::text[])",
            *_columns(rows),
        )


def _due_columns(due: DueDates | None) -> tuple[datetime | None, datetime | None]:
    return (None, None) if due is None else (due.acceptance, due.shipment)


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows turned into one list per column: what ``unnest`` takes, one array per column."""
    return [list(column) for column in zip(*rows, strict=True)]


@dataclass(frozen=True)
class Transition:
    """One row of an order's history: a move applied, or flagged and not applied."""

    ref: tuple[str, str]
    from_status: LengowStatus | None
    to_status: LengowStatus
    kind: str
    observed_at: datetime
    message_id: uuid.UUID
    command_id: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class StoredCommand:
    command_id: str
    outcome: str
    answer_type: str
    answer: dict[str, Any]
    request_digest: str | None = None


@dataclass(frozen=True)
class AnsweredCommand:
    """A command as it is stored once answered: what it asked, the outcome, the answer."""

    command_id: str
    command_type: str | None
    ref: OrderRef | None
    arguments: dict[str, Any]
    outcome: str
    reason: str | None
    answer_type: str
    answer: dict[str, Any]
    message_id: uuid.UUID | None
    request_digest: str | None = None


@dataclass(frozen=True)
class InFlightCommand:
    """An accepted command whose action has neither reached its status nor failed."""

    command_id: str
    command_type: str
    arguments: dict[str, Any]


class CommandRepository:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def get(self, command_id: str) -> StoredCommand | None:
        row = await self._conn.fetchrow(
            "SELECT command_id, outcome, answer_type, answer, request_digest FROM commands"
            " WHERE command_id = $1",
            command_id,
        )
        if row is None:
            return None
        return StoredCommand(
            row["command_id"],
            row["outcome"],
            row["answer_type"],
            row["answer"],
            row["request_digest"],
        )

    async def in_flight(self, ref: OrderRef, command_type: str) -> list[InFlightCommand]:
        rows = await self._conn.fetch(
            "SELECT command_id, command_type, arguments FROM commands"
            " WHERE marketplace = $1 AND marketplace_order_id = $2 AND command_type = $3"
            " AND outcome = 'accepted' AND completed_at IS NULL AND failed_at IS NULL"
            " ORDER BY received_at",
            ref.marketplace,
            ref.marketplace_order_id,
            command_type,
        )
        return [InFlightCommand(r["command_id"], r["command_type"], r["arguments"]) for r in rows]

    async def mark_failed(self, command_id: str, errors: list[str]) -> bool:
        done: str | None = await self._conn.fetchval(
            "UPDATE commands SET failed_at = now(), failure = $2"
            " WHERE command_id = $1 AND failed_at IS NULL RETURNING command_id",
            command_id,
            errors,
        )
        return done is not None

    async def add(self, command: AnsweredCommand) -> None:
        ref = command.ref
        await self._conn.execute(
            "INSERT INTO commands (command_id, command_type, marketplace, marketplace_order_id,"
            " arguments, outcome, reason, answer_type, answer, message_id, request_digest)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            command.command_id,
            command.command_type or "unknown",
            ref.marketplace if ref else None,
            ref.marketplace_order_id if ref else None,
            command.arguments,
            command.outcome,
            command.reason,
            command.answer_type,
            command.answer,
            command.message_id,
            command.request_digest,
        )

    async def awaiting_many(
        self, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """Per order, the accepted commands (id, type) whose outcome was not observed yet,
        oldest first."""
        rows = await self._conn.fetch(
            "SELECT c.marketplace, c.marketplace_order_id, c.command_id, c.command_type"
            " FROM commands c JOIN unnest($1::text[], $2::text[]) AS k(m, i)"
            " ON c.marketplace = k.m AND c.marketplace_order_id = k.i"
            " WHERE c.outcome = 'accepted' AND c.completed_at IS NULL AND c.failed_at IS NULL"
            " ORDER BY c.received_at",
            [key[0] for key in keys],
            [key[1] for key in keys],
        )
        found: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for row in rows:
            key = (row["marketplace"], row["marketplace_order_id"])
            found.setdefault(key, []).append((row["command_id"], row["command_type"]))
        return found

    async def complete_many(self, command_ids: list[str]) -> None:
        if command_ids:
            await self._conn.execute(
                "UPDATE commands SET completed_at = now() WHERE command_id = ANY($1::text[])",
                command_ids,
            )


class MarketplaceRulesRepository:
    """Lengow's rules per marketplace, the newest read kept."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def get(self, marketplace: str) -> dict[str, Any] | None:
        rules: dict[str, Any] | None = await self._conn.fetchval(
            "SELECT rules FROM marketplace_rules WHERE marketplace = $1", marketplace
        )
        return rules

    async def save(
        self, marketplace: str, source: str, rules: dict[str, Any], fetched_at: datetime
    ) -> bool:
        """False when a newer read is already stored."""
        saved: str | None = await self._conn.fetchval(
            "INSERT INTO marketplace_rules (marketplace, source, rules, fetched_at)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (marketplace) DO UPDATE SET"
            " source = excluded.source, rules = excluded.rules,"
            " fetched_at = excluded.fetched_at, received_at = now()"
            " WHERE marketplace_rules.fetched_at <= excluded.fetched_at RETURNING marketplace",
            marketplace,
            source,
            rules,
            fetched_at,
        )
        return saved is not None


@dataclass(frozen=True)
class PendingDeadline:
    marketplace: str
    marketplace_order_id: str
    status: LengowStatus
    deadline: Deadline
    due_at: datetime


def pending_deadlines(orders: str = "orders") -> str:
    """The orders (of the table ``orders``) still waiting on the seller for each deadline,
    and when it falls due: one SELECT per deadline, joined. The watch and ordersctl's
    queries both read it."""
    return " UNION ALL ".join(
        f"SELECT marketplace, marketplace_order_id, lengow_status, '{deadline.value}' AS deadline,"
        f" {deadline.value}_due_at AS due_at FROM {orders}"
        f" WHERE lengow_status IN ({', '.join(repr(s.value) for s in sorted(statuses))})"
        f" AND {deadline.value}_due_at IS NOT NULL"
        for deadline, statuses in PENDING_ON.items()
    )


_PENDING = pending_deadlines()


class DeadlineRepository:
    """The deadlines orders wait on, and the alerts said about them."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def unsaid(self, now: datetime, lead: timedelta, limit: int) -> list[PendingDeadline]:
        """Orders within ``lead`` of a deadline or past it whose alert for that phase was not
        said yet."""
        rows = await self._conn.fetch(
            f"""
            SELECT p.* FROM ({_PENDING}) AS p
            WHERE p.due_at <= $1 AND NOT EXISTS (
                SELECT 1 FROM deadline_alerts a
                WHERE a.marketplace = p.marketplace
                  AND a.marketplace_order_id = p.marketplace_order_id
                  AND a.deadline = p.deadline
                  AND a.phase = CASE WHEN p.due_at <= $2 THEN 'missed' ELSE 'approaching' END)
            ORDER BY p.due_at LIMIT $3
            """,
            now + lead,
            now,
            limit,
        )
        return [
            PendingDeadline(
                marketplace=row["marketplace"],
                marketplace_order_id=row["marketplace_order_id"],
                status=LengowStatus(row["lengow_status"]),
                deadline=Deadline(row["deadline"]),
                due_at=row["due_at"],
            )
            for row in rows
        ]

    async def record(self, pending: PendingDeadline, phase: str) -> bool:
        """Note the alert; False when it was already said (another processor was first)."""
        said = await self._conn.fetchval(
            "INSERT INTO deadline_alerts (marketplace, marketplace_order_id, deadline, phase,"
            " due_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
            pending.marketplace,
            pending.marketplace_order_id,
            pending.deadline.value,
            phase,
            pending.due_at,
        )
        return bool(said)

    async def standing(self, now: datetime, lead: timedelta) -> dict[tuple[str, str], int]:
        """How many orders are at risk (within ``lead``) and late, per deadline."""
        rows = await self._conn.fetch(
            f"""
            SELECT deadline, CASE WHEN due_at <= $2 THEN 'late' ELSE 'at_risk' END AS state,
                count(*) AS n
            FROM ({_PENDING}) AS p WHERE due_at <= $1 GROUP BY 1, 2
            """,
            now + lead,
            now,
        )
        counts = {(d.value, state): 0 for d in Deadline for state in ("at_risk", "late")}
        counts.update({(row["deadline"], row["state"]): row["n"] for row in rows})
        return counts


class ProcessorUnitOfWork(UnitOfWork):
    orders: OrderRepository
    commands: CommandRepository
    rules: MarketplaceRulesRepository
    deadlines: DeadlineRepository

    def bind(self, conn: Connection) -> None:
        self.orders = OrderRepository(conn)
        self.commands = CommandRepository(conn)
        self.rules = MarketplaceRulesRepository(conn)
        self.deadlines = DeadlineRepository(conn)


#: What identifies a customer in an address; the country stays (it decides the VAT).
PERSONAL_FIELDS = tuple(field for field in Address.model_fields if field != "common_country_iso_a2")


def personal_data_rule(horizon: timedelta) -> RetentionRule:
    """The customer's name, contact and address leave the stored snapshot ``horizon`` after
    the order is settled (its billing address and each package's delivery address)."""
    settled = ",".join(sorted(status.value for status in SETTLED_STATUSES))
    fields = ",".join(PERSONAL_FIELDS)
    return RetentionRule(
        "personal_data",
        "WITH stripped AS (UPDATE orders o SET personal_data_removed_at = now(),"
        f" snapshot = o.snapshot || jsonb_build_object("
        f"'billing_address', (o.snapshot->'billing_address') - '{{{fields}}}'::text[],"
        " 'packages', coalesce((SELECT jsonb_agg(p || jsonb_build_object('delivery',"
        f" (p->'delivery') - '{{{fields}}}'::text[]))"
        " FROM jsonb_array_elements(o.snapshot->'packages') p), '[]'::jsonb))"
        " WHERE (o.marketplace, o.marketplace_order_id) IN (SELECT marketplace,"
        " marketplace_order_id FROM orders WHERE personal_data_removed_at IS NULL"
        f" AND lengow_status = ANY('{{{settled}}}'::text[])"
        " AND updated_at < now() - $2::interval LIMIT $1) RETURNING 1)"
        " SELECT count(*) FROM stripped",
        horizon,
    )

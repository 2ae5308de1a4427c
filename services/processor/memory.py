"""The processor's stores in memory: what ``repository.py`` keeps in PostgreSQL, for the
handlers' unit tests, which then need no server.

One suite of store tests (``tests/processor_store.py``) runs against both, so the two behave
alike where the handlers can tell. What memory cannot play is concurrency: ``lock`` does
nothing, as one test runs one handler at a time; the PostgreSQL locks are proven by the
integration and fault tests.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.processor.deadlines import DueDates
from services.processor.lifecycle import OrderState
from services.processor.repository import (
    AnsweredCommand,
    InFlightCommand,
    ProcessorWork,
    StoredCommand,
    Transition,
)
from shared.contracts import OrderRef, OrderSnapshot
from shared.inbox import MemoryInbox
from shared.outbox import OutboxMessage
from shared.unit_of_work import MemoryTransaction

Key = tuple[str, str]


@dataclass
class StoredOrder:
    state: OrderState
    snapshot: OrderSnapshot
    due: DueDates | None


@dataclass
class CommandRow:
    stored: StoredCommand
    command_type: str
    ref: Key | None
    arguments: dict[str, Any]
    completed: bool = False
    failure: list[str] | None = None


@dataclass
class ProcessorData:
    """Everything the processor's schema holds that the handlers read or write."""

    orders: dict[Key, StoredOrder] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    #: In the order they were received.
    commands: dict[str, CommandRow] = field(default_factory=dict)
    rules: dict[str, tuple[str, dict[str, Any], datetime]] = field(default_factory=dict)
    inbox: set[uuid.UUID] = field(default_factory=set)
    outbox: list[OutboxMessage] = field(default_factory=list)


class MemoryOrders:
    def __init__(self, data: ProcessorData) -> None:
        self._data = data

    async def lock(self, ref: OrderRef) -> None:
        """Nothing to serialise: see the module's docstring."""

    async def lock_many(self, keys: list[Key]) -> None:
        """Nothing to serialise: see the module's docstring."""

    async def get(self, ref: OrderRef) -> OrderState | None:
        stored = self._data.orders.get((ref.marketplace, ref.marketplace_order_id))
        return None if stored is None else stored.state

    async def get_many(self, keys: list[Key]) -> dict[Key, OrderState]:
        orders = self._data.orders
        return {key: orders[key].state for key in keys if key in orders}

    async def save_many(
        self,
        saved: dict[Key, tuple[OrderState, OrderSnapshot]],
        due: Mapping[Key, DueDates] | None = None,
    ) -> None:
        for key, (state, snapshot) in saved.items():
            self._data.orders[key] = StoredOrder(state, snapshot, (due or {}).get(key))

    async def add_transitions(self, transitions: list[Transition]) -> None:
        self._data.transitions.extend(transitions)


class MemoryCommands:
    def __init__(self, data: ProcessorData) -> None:
        self._data = data

    async def get(self, command_id: str) -> StoredCommand | None:
        row = self._data.commands.get(command_id)
        return None if row is None else row.stored

    async def add(self, command: AnsweredCommand) -> None:
        if command.command_id in self._data.commands:
            raise KeyError(f"command {command.command_id} is already stored")
        ref = command.ref
        self._data.commands[command.command_id] = CommandRow(
            StoredCommand(
                command.command_id,
                command.outcome,
                command.answer_type,
                command.answer,
                command.request_digest,
            ),
            command.command_type or "unknown",
            None if ref is None else (ref.marketplace, ref.marketplace_order_id),
            command.arguments,
        )

    def _awaiting(self) -> list[CommandRow]:
        return [
            row
            for row in self._data.commands.values()
            if row.stored.outcome == "accepted" and not row.completed and row.failure is None
        ]

    async def in_flight(self, ref: OrderRef, command_type: str) -> list[InFlightCommand]:
        key = (ref.marketplace, ref.marketplace_order_id)
        return [
            InFlightCommand(row.stored.command_id, row.command_type, row.arguments)
            for row in self._awaiting()
            if row.ref == key and row.command_type == command_type
        ]

    async def awaiting_many(self, keys: list[Key]) -> dict[Key, list[tuple[str, str]]]:
        found: dict[Key, list[tuple[str, str]]] = {}
        for row in self._awaiting():
            if row.ref in keys:
                found.setdefault(row.ref, []).append((row.stored.command_id, row.command_type))
        return found

    async def complete_many(self, command_ids: list[str]) -> None:
        for command_id in command_ids:
            if command_id in self._data.commands:
                self._data.commands[command_id].completed = True

    async def mark_failed(self, command_id: str, errors: list[str]) -> bool:
        row = self._data.commands.get(command_id)
        if row is None or row.failure is not None:
            return False
        row.failure = errors
        return True


class MemoryRules:
    def __init__(self, data: ProcessorData) -> None:
        self._data = data

    async def get(self, marketplace: str) -> dict[str, Any] | None:
        stored = self._data.rules.get(marketplace)
        return None if stored is None else stored[1]

    async def save(
        self, marketplace: str, source: str, rules: dict[str, Any], fetched_at: Any
    ) -> bool:
        stored = self._data.rules.get(marketplace)
        if stored is not None and stored[2] > fetched_at:
            return False
        self._data.rules[marketplace] = (source, rules, fetched_at)
        return True


class MemoryUnitOfWork(MemoryTransaction[ProcessorData]):
    """One transaction over :class:`ProcessorData`."""

    inbox: MemoryInbox
    orders: MemoryOrders
    commands: MemoryCommands
    rules: MemoryRules

    def bind(self, data: ProcessorData) -> None:
        self.inbox = MemoryInbox(data.inbox)
        self.orders = MemoryOrders(data)
        self.commands = MemoryCommands(data)
        self.rules = MemoryRules(data)


#: mypy holds the in-memory work to the protocol the handlers take.
_WORK: Callable[[ProcessorData], ProcessorWork] = MemoryUnitOfWork

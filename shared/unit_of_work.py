"""The unit of work: one database transaction, with the inbox and outbox bound to it; and its
in-memory counterpart for the handlers' unit tests."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import TracebackType
from typing import ClassVar, Generic, Protocol, Self, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from shared.database import Connection
from shared.inbox import PostgresInbox
from shared.outbox import MemoryOutbox, Outbox, OutboxMessage, PostgresOutbox


class Work(Protocol):
    """What every service's unit of work is, as its handlers see it: a block that commits on
    a clean exit and rolls back on an exception, with the outbox written in it."""

    @property
    def outbox(self) -> Outbox: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class UnitOfWork:
    """Commits on a clean exit, rolls back on an exception.

    After a commit that wrote to the outbox, ``on_outbox_write`` wakes the relay up. Services
    subclass it and bind their repositories in :meth:`bind`.
    """

    inbox: PostgresInbox
    outbox: PostgresOutbox

    def __init__(
        self,
        pool: asyncpg.Pool,
        on_outbox_write: Callable[[], None],
        *,
        connection: Connection | None = None,
    ) -> None:
        """With ``connection``, the work runs on that connection (already held by the caller,
        e.g. for a session lock) instead of one borrowed from the pool."""
        self._pool = pool
        self._on_outbox_write = on_outbox_write
        self._given = connection

    def bind(self, conn: Connection) -> None:
        """Attach the service's repositories to the transaction's connection."""

    @property
    def connection(self) -> Connection:
        """The transaction's connection, for a repository used in this unit of work only."""
        return self._conn

    async def __aenter__(self) -> Self:
        self._acquired: PoolConnectionProxy | None = None
        if self._given is not None:
            self._conn: Connection = self._given
        else:
            self._acquired = await self._pool.acquire()
            self._conn = self._acquired
        try:
            self._tx: Transaction = self._conn.transaction()
            await self._tx.start()
        except BaseException:
            await self._release()
            raise
        self.inbox = PostgresInbox(self._conn)
        self.outbox = PostgresOutbox(self._conn)
        self.bind(self._conn)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                await self._tx.commit()
            else:
                await self._tx.rollback()
        finally:
            await self._release()
        if exc_type is None and self.outbox.added:
            self._on_outbox_write()

    async def _release(self) -> None:
        if self._acquired is not None:
            await self._pool.release(self._acquired)


class MemoryData(Protocol):
    """A service's stores kept in memory: whatever they hold, and the outbox."""

    outbox: list[OutboxMessage]


DataT = TypeVar("DataT", bound=MemoryData)


class MemoryTransaction(Generic[DataT]):
    """One transaction over a service's data in memory: what the block wrote is kept on a
    clean exit and undone on an exception (the data as it was on entry, copied whole: the
    tests' stores are small). Services subclass it and bind their repositories in
    :meth:`bind`."""

    outbox: MemoryOutbox
    #: What the session holds rather than the transaction (a lock): kept by a rollback.
    session_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, data: DataT) -> None:
        self._data = data

    def bind(self, data: DataT) -> None:
        """Attach the service's repositories to the data."""

    async def __aenter__(self) -> Self:
        self._before = copy.deepcopy(self._data)
        self.outbox = MemoryOutbox(self._data.outbox)
        self.bind(self._data)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            return
        kept = {name: getattr(self._data, name) for name in self.session_fields}
        self._data.__dict__.update(self._before.__dict__)
        self._data.__dict__.update(kept)

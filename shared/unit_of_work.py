"""The unit of work: one database transaction, with the inbox and outbox bound to it."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from shared.database import Connection
from shared.inbox import PostgresInbox
from shared.outbox import PostgresOutbox


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

"""The shared store suite (tests/notifier_store.py) on PostgreSQL, as the notifier runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.notifier.repository import NotifierStore, PostgresNotifierStore
from shared.database import create_pool, migrate_dsn
from tests.notifier_store import NotifierStoreContract

pytestmark = pytest.mark.integration


class TestPostgresNotifierStore(NotifierStoreContract):
    @pytest.fixture
    async def store(self, database_url: str) -> AsyncIterator[NotifierStore]:
        await migrate_dsn(database_url, "notifier", "services.notifier")
        pool = await create_pool(database_url, "notifier")
        try:
            yield PostgresNotifierStore(pool, lambda: None)
        finally:
            await pool.close()

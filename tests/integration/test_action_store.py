"""The shared store suite (tests/action_store.py) on PostgreSQL, as the poller runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.poller.repository import ActionStore, PostgresActionStore
from shared.database import create_pool, migrate_dsn
from tests.action_store import ActionStoreContract

pytestmark = pytest.mark.integration


class TestPostgresActionStore(ActionStoreContract):
    @pytest.fixture
    async def store(self, database_url: str) -> AsyncIterator[ActionStore]:
        await migrate_dsn(database_url, "poller", "services.poller")
        pool = await create_pool(database_url, "poller")
        try:
            yield PostgresActionStore(pool, lambda: None)
        finally:
            await pool.close()

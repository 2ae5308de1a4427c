"""The shared store suite (tests/poll_store.py) on PostgreSQL, as the poller runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.poller.repository import PollerRepository, Polls
from shared.database import create_pool, migrate_dsn
from tests.poll_store import PollStoreContract

pytestmark = pytest.mark.integration


class TestPostgresPolls(PollStoreContract):
    @pytest.fixture
    async def polls(self, database_url: str) -> AsyncIterator[Polls]:
        await migrate_dsn(database_url, "poller", "services.poller")
        pool = await create_pool(database_url, "poller")
        try:
            yield PollerRepository(pool)
        finally:
            await pool.close()

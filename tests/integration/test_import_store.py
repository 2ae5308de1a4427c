"""The shared store suite (tests/import_store.py) on PostgreSQL, as the poller runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.poller.repository import ImportRepository, Imports, PollerRepository
from shared.database import create_pool, migrate_dsn
from tests.import_store import ImportStoreContract, ReadFrom

pytestmark = pytest.mark.integration


class TestPostgresImports(ImportStoreContract):
    @pytest.fixture
    async def pool(self, database_url: str) -> AsyncIterator[asyncpg.Pool]:
        await migrate_dsn(database_url, "poller", "services.poller")
        pool = await create_pool(database_url, "poller")
        try:
            yield pool
        finally:
            await pool.close()

    @pytest.fixture
    def imports(self, pool: asyncpg.Pool) -> Imports:
        return ImportRepository(pool)

    @pytest.fixture
    def read_from(self, pool: asyncpg.Pool) -> ReadFrom:
        async def read(order_id: str, source: str) -> None:
            rows = [("manomano_fr", order_id, "fingerprint", "waiting_acceptance")]
            await PollerRepository(pool).save_fingerprints(source, rows)

        return read

"""The shared store suite (tests/processor_store.py) on PostgreSQL, as the processor runs it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.processor.repository import ProcessorUnitOfWork
from shared.database import create_pool, migrate_dsn
from tests.processor_store import NewWork, ProcessorStoreContract

pytestmark = pytest.mark.integration


class TestPostgresProcessorStore(ProcessorStoreContract):
    @pytest.fixture
    async def new_work(self, database_url: str) -> AsyncIterator[NewWork]:
        await migrate_dsn(database_url, "processor", "services.processor")
        pool = await create_pool(database_url, "processor")
        try:
            yield lambda: ProcessorUnitOfWork(pool, lambda: None)
        finally:
            await pool.close()

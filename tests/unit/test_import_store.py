"""The shared store suite (tests/import_store.py) on the in-memory store the import marker's
unit tests use."""

from __future__ import annotations

import pytest

from services.poller.memory import MemoryImports, MemoryPolls, PollerData
from services.poller.repository import Imports
from tests.import_store import ImportStoreContract, ReadFrom


class TestMemoryImports(ImportStoreContract):
    @pytest.fixture
    def data(self) -> PollerData:
        return PollerData()

    @pytest.fixture
    def imports(self, data: PollerData) -> Imports:
        return MemoryImports(data)

    @pytest.fixture
    def read_from(self, data: PollerData) -> ReadFrom:
        async def read(order_id: str, source: str) -> None:
            rows = [("manomano_fr", order_id, "fingerprint", "waiting_acceptance")]
            await MemoryPolls(data).save_fingerprints(source, rows)

        return read

"""The shared store suite (tests/processor_store.py) on the in-memory stores the handlers'
unit tests use."""

from __future__ import annotations

import pytest

from services.processor.memory import MemoryUnitOfWork, ProcessorData
from tests.processor_store import NewWork, ProcessorStoreContract


class TestMemoryProcessorStore(ProcessorStoreContract):
    @pytest.fixture
    def new_work(self) -> NewWork:
        data = ProcessorData()
        return lambda: MemoryUnitOfWork(data)

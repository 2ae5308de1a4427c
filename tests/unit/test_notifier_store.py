"""The shared store suite (tests/notifier_store.py) on the in-memory stores the handlers'
unit tests use."""

from __future__ import annotations

import pytest

from services.notifier.memory import MemoryNotifierStore, NotifierData
from services.notifier.repository import NotifierStore
from tests.notifier_store import NotifierStoreContract


class TestMemoryNotifierStore(NotifierStoreContract):
    @pytest.fixture
    def store(self) -> NotifierStore:
        return MemoryNotifierStore(NotifierData())

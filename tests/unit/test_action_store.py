"""The shared store suite (tests/action_store.py) on the in-memory store the gateway's unit
tests use."""

from __future__ import annotations

import pytest

from services.poller.memory import MemoryActionStore, PollerData
from services.poller.repository import ActionStore
from tests.action_store import ActionStoreContract


class TestMemoryActionStore(ActionStoreContract):
    @pytest.fixture
    def store(self) -> ActionStore:
        return MemoryActionStore(PollerData())

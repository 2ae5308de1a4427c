"""The shared store suite (tests/poll_store.py) on the in-memory store the polls' unit tests
use."""

from __future__ import annotations

import pytest

from services.poller.memory import MemoryPolls, PollerData
from services.poller.repository import Polls
from tests.poll_store import PollStoreContract


class TestMemoryPolls(PollStoreContract):
    @pytest.fixture
    def polls(self) -> Polls:
        return MemoryPolls(PollerData())

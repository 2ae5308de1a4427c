"""A service's parts made at start: used earlier, they say so, whichever part and service."""

from __future__ import annotations

import pytest

from shared.service import NotStartedError, StartedPart


class Service:
    pool = StartedPart[str]()
    relay = StartedPart[int]()


def test_a_part_read_before_it_is_made_says_which_and_whose() -> None:
    service = Service()
    with pytest.raises(NotStartedError, match="Service is not started: its relay is made at start"):
        _ = service.relay


def test_a_made_part_belongs_to_its_service_only() -> None:
    first, second = Service(), Service()
    first.pool = "first's pool"
    assert first.pool == "first's pool"
    with pytest.raises(NotStartedError):
        _ = second.pool
    with pytest.raises(NotStartedError):
        _ = first.relay

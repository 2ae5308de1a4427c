"""The one settlement rule, without a broker."""

from __future__ import annotations

import pytest

from shared.settings import ServiceSettings
from shared.settlement import (
    RedeliveryBackoff,
    RetryLaterError,
    UnprocessableMessageError,
    Verdict,
    delivery_count,
    settlement,
)


def test_each_outcome_has_one_verdict() -> None:
    backoff = RedeliveryBackoff(first=1, cap=300)
    assert settlement(None, 0, backoff).verdict is Verdict.ACKNOWLEDGE
    refused = settlement(UnprocessableMessageError("invalid message: id"), 3, backoff)
    assert (refused.verdict, refused.reason) == (Verdict.DEAD_LETTER, "invalid message: id")
    later = settlement(RetryLaterError("busy"), 2, backoff)
    assert (later.verdict, later.delay) == (Verdict.REQUEUE_LATER, 4.0)
    assert settlement(OSError("database away"), 0, backoff).delay == 1.0


def test_the_default_pauses_outlast_half_an_hour_within_the_delivery_limit() -> None:
    """20 deliveries allowed: with the defaults the 19 pauses span 58 minutes, so an outage of
    30 minutes dead-letters nothing (before: 20 s)."""
    backoff = ServiceSettings().redelivery_backoff
    pauses = [backoff.delay(returned) for returned in range(19)]
    assert pauses[:4] == [1.0, 2.0, 4.0, 8.0]
    assert max(pauses) == 300.0
    assert sum(pauses) == 3511.0


@pytest.mark.parametrize(
    ("headers", "count"),
    [(None, 0), ({}, 0), ({"x-delivery-count": 4}, 4), ({"x-delivery-count": "x"}, 0)],
)
def test_the_delivery_count_is_read_from_the_quorum_queue_header(
    headers: dict[str, object] | None, count: int
) -> None:
    assert delivery_count(headers) == count


def test_a_huge_count_stays_at_the_cap() -> None:
    assert RedeliveryBackoff(first=1, cap=300).delay(10_000) == 300.0
    assert RedeliveryBackoff(first=0, cap=300).delay(5) == 0.0


def test_the_inbox_outlives_the_dead_letter_replay_horizon() -> None:
    """A dead letter replayed after its id left the inbox would be handled twice."""
    with pytest.raises(ValueError, match="INBOX_RETENTION_DAYS must be longer"):
        ServiceSettings(inbox_retention_days=10, dead_letter_replay_days=14)

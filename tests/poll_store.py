"""One suite for the polls' store, run against PostgreSQL (``PollerRepository``,
tests/integration/test_poll_store.py) and memory (``MemoryPolls``,
tests/unit/test_poll_store.py): the polls' unit tests on memory prove something only while
both pass it.

A subclass gives the fixture ``polls``: a :class:`Polls` over a fresh, empty store.
"""

from __future__ import annotations

from datetime import timedelta

from services.poller.repository import Polls
from services.poller.sync import utc_now
from tests.factories import BASE_TIME

SOURCE = "ManoMano Standard"
M = "manomano_fr"


class PollStoreContract:
    async def test_the_watermark_only_moves_forward(self, polls: Polls) -> None:
        assert await polls.watermark(SOURCE) is None
        await polls.advance_watermark(SOURCE, BASE_TIME)
        await polls.advance_watermark(SOURCE, BASE_TIME - timedelta(hours=1))
        assert await polls.watermark(SOURCE) == BASE_TIME
        await polls.advance_watermark(SOURCE, BASE_TIME + timedelta(minutes=15))
        assert await polls.watermark(SOURCE) == BASE_TIME + timedelta(minutes=15)
        assert await polls.watermark("another source") is None

    async def test_fingerprints_are_replaced_and_read_by_order(self, polls: Polls) -> None:
        await polls.save_fingerprints(
            SOURCE, [(M, "A", "f1", "accepted"), (M, "B", "f2", "shipped")]
        )
        await polls.save_fingerprints(SOURCE, [(M, "A", "f3", "shipped")])
        assert await polls.fingerprints([(M, "A"), (M, "B"), (M, "C")]) == {
            (M, "A"): "f3",
            (M, "B"): "f2",
        }
        assert await polls.fingerprints([]) == {}

    async def test_open_orders_are_those_not_settled_and_not_published_since(
        self, polls: Polls
    ) -> None:
        await polls.save_fingerprints(
            SOURCE,
            [(M, "A", "f", "waiting_shipment"), (M, "B", "f", "closed"), (M, "C", "f", "shipped")],
        )
        await polls.save_fingerprints("another source", [(M, "D", "f", "accepted")])
        later = utc_now() + timedelta(minutes=1)
        found = await polls.open_orders(SOURCE, later, 10)
        assert sorted(found) == [(M, "A", "waiting_shipment"), (M, "C", "shipped")]
        assert await polls.open_orders(SOURCE, BASE_TIME, 10) == []  # all published since
        assert len(await polls.open_orders(SOURCE, later, 1)) == 1

    async def test_a_quarantined_order_holds_the_watermark_until_released(
        self, polls: Polls
    ) -> None:
        held_from = BASE_TIME
        raw = {"marketplace_order_id": "A"}
        await polls.quarantine(SOURCE, [(M, "A", "malformed", "no total", raw, held_from)])
        await polls.quarantine(
            SOURCE, [(M, "A", "malformed", "still", raw, held_from + timedelta(hours=1))]
        )
        await polls.quarantine(SOURCE, [(M, "B", "unknown_status", "new status", {}, held_from)])
        assert await polls.quarantined(SOURCE) == 2
        since = utc_now() - timedelta(days=3)
        assert await polls.quarantine_hold(SOURCE, since) == held_from
        # Seen first before ``since``: no catch-up reaches it, it holds nothing back.
        assert await polls.quarantine_hold(SOURCE, utc_now() + timedelta(minutes=1)) is None
        assert await polls.release([(M, "A"), (M, "C")]) == [(M, "A")]
        assert await polls.release([]) == []
        assert await polls.quarantined(SOURCE) == 1
        assert await polls.quarantined("another source") == 0

    async def test_the_last_catchup_is_the_latest_day(self, polls: Polls) -> None:
        assert await polls.last_catchup(SOURCE) is None
        await polls.record_catchup(SOURCE, BASE_TIME.date())
        await polls.record_catchup(SOURCE, BASE_TIME.date())
        await polls.record_catchup(SOURCE, (BASE_TIME - timedelta(days=1)).date())
        assert await polls.last_catchup(SOURCE) == BASE_TIME.date()
        assert await polls.last_catchup("another source") is None

    async def test_one_replica_polls_a_source_at_a_time(self, polls: Polls) -> None:
        async with polls.source_lock(SOURCE) as mine:
            assert mine is not None
            async with polls.source_lock(SOURCE) as other:
                assert other is None
            async with polls.source_lock("another source") as unrelated:
                assert unrelated is not None
            # The locked session is a store like the other.
            await mine.advance_watermark(SOURCE, BASE_TIME)
        assert await polls.watermark(SOURCE) == BASE_TIME
        async with polls.source_lock(SOURCE) as later:
            assert later is not None

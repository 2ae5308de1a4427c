"""The polls (``OrderSync``) on the in-memory store, reading the sandbox's marketplace in
process: no server. The marketplace is the sandbox's own model (``sandbox/marketplace.py``:
the orders in Lengow's JSON, filtered on ``updated_at`` as Lengow does); only the HTTP and the
paging are played here, a page at a time. The store passes the suite PostgreSQL passes
(tests/poll_store.py); the integration tests poll the sandbox over HTTP
(tests/integration/test_poller.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sandbox.marketplace import Marketplace
from services.poller.lengow import LengowUnavailableError
from services.poller.memory import MemoryPolls, PollerData
from services.poller.schedule import Window
from services.poller.settings import LengowSource, PollerSettings
from services.poller.sync import OrderSync
from shared.contracts import Envelope
from tests.factories import BASE_TIME

SOURCE = "ManoMano Standard"


class Clock:
    def __init__(self) -> None:
        self.now = BASE_TIME

    def __call__(self) -> datetime:
        return self.now


@dataclass
class InProcessLengow:
    """Lengow's orders route over the sandbox's marketplace; ``fail_at_page``: the page at
    which Lengow stops answering (1 is the first)."""

    marketplace: Marketplace
    fail_at_page: int | None = None

    def lengow_time(self, monotonic: float, local: datetime) -> datetime:
        return local

    async def order_pages(
        self,
        *,
        account_id: int,
        marketplace: str,
        updated_from: datetime,
        updated_to: datetime,
        page_size: int = 100,
        max_restarts: int = 5,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        found = self.marketplace.query(updated_from=updated_from, updated_to=updated_to)
        for number, start in enumerate(range(0, len(found), page_size), start=1):
            if number == self.fail_at_page:
                raise LengowUnavailableError("Lengow answered 503 five times")
            yield [dict(order.raw) for order in found[start : start + page_size]]

    async def order(
        self, account_id: int, marketplace: str, order_id: str
    ) -> dict[str, Any] | None:
        found = self.marketplace.query(marketplace_order_id=order_id)
        return dict(found[0].raw) if found else None


@dataclass
class Polls:
    sync: OrderSync
    source: LengowSource
    data: PollerData
    lengow: InProcessLengow
    clock: Clock
    published: list[Envelope[Any]]

    def published_ids(self) -> list[str]:
        return sorted(e.data.marketplace_order_id for e in self.published)


def polls(orders: int = 5, age: timedelta = timedelta(hours=2), **overrides: Any) -> Polls:
    """``orders`` orders at the marketplace, each last updated about ``age`` ago."""
    settings = PollerSettings.model_validate(
        {
            "lengow_sources": [
                {"name": SOURCE, "account_id": 1000, "access_token": "t", "secret": "s"}
            ],
            "lengow_page_size": 2,
            **overrides,
        }
    )
    marketplace = Marketplace()
    for index in range(orders):
        marketplace.create_order(at=BASE_TIME - age - timedelta(seconds=index))
    clock, data = Clock(), PollerData()
    lengow = InProcessLengow(marketplace)
    published: list[Envelope[Any]] = []

    async def publish(envelope: Envelope[Any]) -> None:
        published.append(envelope)

    sync = OrderSync(settings, MemoryPolls(data), {SOURCE: lengow}, publish, clock)
    return Polls(sync, settings.lengow_sources[0], data, lengow, clock, published)


async def test_a_poll_publishes_each_order_once_and_moves_the_watermark() -> None:
    p = polls(5, age=timedelta(seconds=30))
    report = await p.sync.incremental(p.source)
    assert (report.fetched, report.published, report.error) == (5, 5, None)
    assert p.data.watermarks[SOURCE] == BASE_TIME
    p.clock.now += timedelta(minutes=15)
    again = await p.sync.incremental(p.source)
    assert (again.published, again.unchanged) == (0, 5)  # the overlap, read again: unchanged
    assert len(p.published) == 5


async def test_an_order_that_moved_is_published_again() -> None:
    p = polls(3)
    await p.sync.incremental(p.source)
    moved = next(iter(p.lengow.marketplace.orders))
    p.lengow.marketplace.move(moved, "accepted", BASE_TIME + timedelta(minutes=5))
    p.clock.now += timedelta(minutes=15)
    report = await p.sync.incremental(p.source)
    assert report.published == 1
    assert p.published[-1].data.marketplace_order_id == moved
    assert p.published[-1].data.lengow_status.value == "accepted"


async def test_lengow_failing_mid_window_moves_nothing_and_the_next_poll_reads_it_all() -> None:
    p = polls(5)
    p.lengow.fail_at_page = 2
    report = await p.sync.incremental(p.source)
    assert report.error is not None and report.published == 2
    assert SOURCE not in p.data.watermarks
    p.lengow.fail_at_page = None
    p.clock.now += timedelta(minutes=15)
    await p.sync.incremental(p.source)
    assert len(set(p.published_ids())) == 5 and p.data.watermarks[SOURCE] == p.clock.now


async def test_an_unreadable_order_is_quarantined_holds_the_watermark_then_reads() -> None:
    p = polls(3)
    broken = next(iter(p.lengow.marketplace.orders.values()))
    good_total = broken.raw["total_order"]
    broken.raw["total_order"] = "n/a"
    report = await p.sync.incremental(p.source)
    assert (report.published, report.malformed) == (2, 1)
    held = datetime.fromisoformat(broken.raw["updated_at"])
    assert p.data.watermarks[SOURCE] == held  # not past the order in quarantine
    broken.raw["total_order"] = good_total
    p.clock.now += timedelta(minutes=15)
    await p.sync.incremental(p.source)
    assert broken.id in p.published_ids() and p.data.quarantine == {}


async def test_a_catchup_republishes_the_window_once_a_day() -> None:
    p = polls(3, catchup_time="00:00")
    await p.sync.incremental(p.source)
    report = await p.sync.catchup_if_due(p.source)
    assert report is not None and (report.published, report.republished) == (3, 3)
    assert await p.sync.catchup_if_due(p.source) is None  # done today
    assert len(p.published) == 6


async def test_a_source_another_replica_polls_is_left_to_it() -> None:
    p = polls(3)
    async with MemoryPolls(p.data).source_lock(SOURCE):
        window = Window(BASE_TIME - timedelta(days=1), BASE_TIME)
        report = await p.sync.poll(p.source, "incremental", window)
    assert report.locked_out and p.published == []

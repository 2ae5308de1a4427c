"""The client-side budget of Lengow calls: a sliding window per counter, shared by every
client of the process, in which background calls give way to polls."""

from __future__ import annotations

import asyncio

from services.poller.lengow import RateBudget, counter_of


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_calls_past_the_budget_wait_for_the_window_to_slide() -> None:
    clock = FakeClock()
    budget = RateBudget(3, window_seconds=60, clock=clock)
    for _ in range(3):
        await budget.spend("/v3.0/orders")
    assert budget.used("/v3.0/orders") == 3
    assert budget.delay("/v3.0/orders") == 60
    clock.now += 59.5
    assert budget.delay("/v3.0/orders") == 0.5
    clock.now += 0.5
    assert budget.delay("/v3.0/orders") == 0
    await budget.spend("/v3.0/orders/actions/")  # another counter has its own window
    assert budget.used("/v3.0/orders/actions/") == 1


def test_moi_counts_with_the_orders_route() -> None:
    assert counter_of("/v3.0/orders/moi/") == "/v3.0/orders"
    assert counter_of("/v3.0/orders") == "/v3.0/orders"
    assert counter_of("/v3.0/orders/actions/") == "/v3.0/orders/actions/"


async def test_background_calls_give_way_to_a_poll_in_progress() -> None:
    budget = RateBudget(100, window_seconds=60)
    budget.BACKGROUND_GRACE_SECONDS = 0.2
    await budget.spend("/v3.0/orders")  # a poll's page
    background = asyncio.create_task(budget.spend("/v3.0/orders", background=True))
    await asyncio.sleep(0.1)
    assert not background.done()  # the poll may need the next call
    await asyncio.sleep(0.2)
    assert background.done()
    assert budget.used("/v3.0/orders") == 2

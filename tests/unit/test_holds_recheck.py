"""The start-up recheck of held invoices waits out a database that does not answer yet."""

from __future__ import annotations

import asyncio

from services.notifier.holds_recheck import HeldInvoicesRecheck


class FlakyHolds:
    def __init__(self, outages: int) -> None:
        self.outages = outages
        self.calls = 0

    async def recheck_holds(self) -> int:
        self.calls += 1
        if self.calls <= self.outages:
            raise ConnectionRefusedError(111, "Connection refused")
        return 2


async def test_a_database_outage_postpones_the_recheck_and_never_ends_it() -> None:
    holds = FlakyHolds(outages=2)
    recheck = HeldInvoicesRecheck(holds, pause=0.01)
    recheck.start()
    await asyncio.wait_for(recheck._task, timeout=5)  # type: ignore[arg-type]
    assert holds.calls == 3


async def test_the_recheck_stops_with_the_service_while_it_waits() -> None:
    holds = FlakyHolds(outages=10**6)
    recheck = HeldInvoicesRecheck(holds, pause=0.01)
    recheck.start()
    await asyncio.sleep(0.05)
    await recheck.stop()
    assert holds.calls >= 2

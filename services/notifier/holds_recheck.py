"""At start, every held invoice is looked at again (the settings may have been fixed since),
in the background: a database that does not answer yet postpones the recheck, never the
start. Awaited in the start-up hook, a PostgreSQL outage at that moment killed the notifier
(seen in the fault suite's long-outage scenario on a slow machine)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from services.notifier.repository import STORE_OUTAGES
from shared.background import BackgroundTask
from shared.logging import get_logger

log = get_logger(__name__)


class HeldInvoices(Protocol):
    async def recheck_holds(self) -> int: ...


class HeldInvoicesRecheck(BackgroundTask):
    name = "notifier.held_invoices_recheck"

    def __init__(self, held: HeldInvoices, *, pause: float = 5.0) -> None:
        super().__init__()
        self._held = held
        self._pause = pause

    async def run(self) -> None:
        while True:
            try:
                released = await self._held.recheck_holds()
            except STORE_OUTAGES as outage:
                log.warning(
                    "invoice.holds_recheck_postponed",
                    reason=repr(outage),
                    retry_in_seconds=self._pause,
                )
                await asyncio.sleep(self._pause)
                continue
            log.info("invoice.holds_rechecked", held_invoices_released=released)
            return

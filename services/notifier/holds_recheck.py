"""At start, every held invoice is looked at again (the settings may have been fixed since),
in the background: a database that does not answer yet postpones the recheck, never the
start. Awaited in the start-up hook, a PostgreSQL outage at that moment killed the notifier
(seen in the fault suite's long-outage scenario on a slow machine)."""

from __future__ import annotations

from typing import Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_fixed

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
        # The same outages as the sender's retries (sending.py), but with no last attempt:
        # the recheck has nowhere else to go, and the service stops it.
        async for attempt in AsyncRetrying(
            wait=wait_fixed(self._pause),
            retry=retry_if_exception_type(STORE_OUTAGES),
            before_sleep=self._postponed,
        ):
            with attempt:
                released = await self._held.recheck_holds()
        log.info("invoice.holds_rechecked", held_invoices_released=released)

    def _postponed(self, state: RetryCallState) -> None:
        outcome = state.outcome
        log.warning(
            "invoice.holds_recheck_postponed",
            reason=repr(outcome.exception() if outcome else None),
            retry_in_seconds=self._pause,
        )

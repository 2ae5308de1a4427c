"""Marking orders imported at Lengow (``PATCH /v3.0/orders/moi/``), as every Lengow client does
once an order is in the shop: Lengow's back office then shows it integrated, and
``merchant_order_id=None`` stops returning it.

An order is marked once the processor has recorded it (its first ``order.status_changed``),
with our own stable merchant order id, or with the id another service sends in an
``order.link`` command. The request is recorded and acknowledged at once; one loop marks what
is pending, at the pace of the budget it shares with the polls (``moi`` counts as
``/v3.0/orders`` at Lengow), behind them, since a poll matters more than a back-office flag.
Each order is claimed by one replica at a time. The PATCH sets the same list each time, so a
retry after a doubt is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Mapping, Sequence

import asyncpg

from services.poller.lengow import LengowError, LengowImports, LengowNotFoundError
from services.poller.repository import Imports, PendingImport
from services.poller.settings import LengowSource, PollerSettings
from shared.contracts import Envelope, OrderLinkRequested, OrderStatusChanged
from shared.logging import get_logger

log = get_logger(__name__)


def merchant_order_id(marketplace: str, order_id: str) -> str:
    """Our own id for an order: stable (the same order always gets the same one) and short."""
    digest = hashlib.sha256(f"{marketplace}\x1f{order_id}".encode()).hexdigest()
    return f"LO-{digest[:16].upper()}"


class ImportMarker:
    def __init__(
        self,
        settings: PollerSettings,
        imports: Imports,
        clients: Mapping[str, LengowImports],
    ) -> None:
        self._settings = settings
        self._imports = imports
        self._clients = clients
        self._sources = {source.name: source for source in settings.lengow_sources}
        self._wanted = asyncio.Event()

    async def on_orders_recorded(self, envelopes: Sequence[Envelope[OrderStatusChanged]]) -> None:
        """A batch of ``order.status_changed``: the first of each order asks for its marking
        (a 3-day catch-up brings 100,000 of them; one INSERT a batch)."""
        rows = {
            (changed.marketplace, changed.marketplace_order_id): merchant_order_id(
                changed.marketplace, changed.marketplace_order_id
            )
            for changed in (envelope.data for envelope in envelopes)
            if changed.kind == "initial"
        }
        if await self._imports.request_many(
            [(marketplace, order_id, ours) for (marketplace, order_id), ours in rows.items()]
        ):
            self._wanted.set()

    async def on_link_requested(self, envelope: Envelope[OrderLinkRequested]) -> None:
        link = envelope.data
        if await self._imports.link(
            link.marketplace, link.marketplace_order_id, link.merchant_order_id
        ):
            self._wanted.set()

    async def mark_pending(self) -> int:
        """Mark every pending order that is due; returns how many are now marked."""
        marked = 0
        lease = max(self._settings.import_retry_seconds, 30.0)
        while claimed := await self._imports.claim(100, lease):
            for item in claimed:
                marked += int(await self._mark(item))
        return marked

    async def run(self) -> None:
        """Marks what is pending as soon as it is requested, and retries failures."""
        while True:
            self._wanted.clear()
            try:
                await self.mark_pending()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("order.import_marking_paused", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wanted.wait(), max(self._settings.import_retry_seconds, 1.0)
                )

    def _source_for(self, item: PendingImport) -> LengowSource | None:
        if item.source in self._sources:
            return self._sources[item.source]
        return next((s for s in self._sources.values() if s.marketplace == item.marketplace), None)

    async def _mark(self, item: PendingImport) -> bool:
        imports = self._imports
        bound = log.bind(
            order_id=item.marketplace_order_id, merchant_order_id=item.merchant_order_id
        )
        source = self._source_for(item)
        if source is None:
            await imports.attempt_failed(item, "no Lengow source for this marketplace", True, 0)
            bound.error("order.import_unmarkable", reason="no Lengow source for the marketplace")
            return False
        try:
            await self._clients[source.name].mark_imported(
                background=True,
                account_id=source.account_id,
                marketplace=item.marketplace,
                marketplace_order_id=item.marketplace_order_id,
                merchant_id=item.merchant_order_id,
            )
        except LengowError as exc:
            # "Pas trouvé": Lengow has no such order on this account; asking again won't help.
            give_up = isinstance(exc, LengowNotFoundError) or (
                item.attempts + 1 >= self._settings.import_max_attempts
            )
            await imports.attempt_failed(
                item, str(exc), give_up, self._settings.import_retry_seconds
            )
            bound.warning("order.import_mark_failed", error=str(exc), gave_up=give_up)
            return False
        await imports.done(item)
        bound.info("order.marked_imported")
        return True

"""Lengow's marketplaces document (``GET /v3.0/marketplaces``): read per source at start, every
12 hours and soon after a refusal, kept in the poller's schema, published when it changes.

The document is the source of truth for which actions each status allows, their mandatory and
optional arguments, and the codes each argument accepts; the processor validates commands
against what this publishes (``marketplace.rules_changed``).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from services.poller.lengow import LengowClient, LengowError
from services.poller.repository import MarketplaceDocuments
from services.poller.settings import LengowSource, PollerSettings
from shared.contracts import Envelope, EventType, MarketplaceRulesChanged
from shared.logging import get_logger
from shared.topology import EVENTS
from shared.unit_of_work import UnitOfWork

log = get_logger(__name__)

#: A refusal asks for a fresh document, but not more than once a minute per source.
REFRESH_AFTER_REFUSAL_SECONDS = 60.0


def digest_of(rules: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(rules, option=orjson.OPT_SORT_KEYS)).hexdigest()


class MarketplaceRulesReader:
    def __init__(
        self,
        settings: PollerSettings,
        pool: asyncpg.Pool,
        clients: dict[str, LengowClient],
        wake_relay: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._clients = clients
        self._wake_relay = wake_relay
        self._wanted = {source.name: asyncio.Event() for source in settings.lengow_sources}
        self._last_read: dict[str, float] = {}

    async def refresh(self, source: LengowSource, *, publish_unchanged: bool = False) -> bool:
        """Read the document; store and publish the source's marketplace entry when it
        changed (or always, with ``publish_unchanged``). True when it was published."""
        document = await self._clients[source.name].marketplaces(source.account_id)
        self._last_read[source.name] = asyncio.get_running_loop().time()
        rules = document.get(source.marketplace)
        if not isinstance(rules, dict):
            log.error(
                "marketplace.missing_from_document",
                source=source.name,
                marketplace=source.marketplace,
                known=sorted(document)[:20],
            )
            return False
        digest = digest_of(rules)
        now = datetime.now(UTC)
        async with UnitOfWork(self._pool, self._wake_relay) as uow:
            documents = MarketplaceDocuments(uow.connection)
            if not publish_unchanged and await documents.digest(source.name) == digest:
                return False
            await documents.save(source.name, source.marketplace, rules, digest, now)
            await uow.outbox.add(
                EVENTS.name,
                Envelope[Any](
                    type=EventType.MARKETPLACE_RULES_CHANGED,
                    source="poller",
                    data=MarketplaceRulesChanged(
                        marketplace=source.marketplace,
                        source=source.name,
                        fetched_at=now,
                        rules=rules,
                    ),
                ),
            )
        log.info("marketplace.rules_published", source=source.name, digest=digest[:12])
        return True

    def refresh_soon(self, source_name: str) -> None:
        """After a refusal: the document may have changed (a code we do not know)."""
        if (wanted := self._wanted.get(source_name)) is not None:
            wanted.set()

    async def run(self, source: LengowSource) -> None:
        """At start (published whatever it holds), then every ``marketplace_refresh_seconds``
        or soon after a refusal; a failure is tried again a minute later."""
        wanted = self._wanted[source.name]
        first = True
        while True:
            try:
                await self.refresh(source, publish_unchanged=first)
                first = False
                timeout = self._settings.marketplace_refresh_seconds
            except LengowError as exc:
                log.warning("marketplace.read_failed", source=source.name, error=str(exc))
                timeout = REFRESH_AFTER_REFUSAL_SECONDS
            wanted.clear()
            try:
                await asyncio.wait_for(wanted.wait(), timeout)
                await asyncio.sleep(REFRESH_AFTER_REFUSAL_SECONDS)  # at most one read a minute
            except TimeoutError:
                pass

"""One poll of one source: read Lengow's window, publish what changed, move the watermark."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from pydantic import ValidationError

from services.poller import schedule
from services.poller.lengow import LengowError, LengowOrders
from services.poller.metrics import (
    CLOCK_SKEW,
    ORDERS_PUBLISHED,
    ORDERS_SKIPPED,
    POLL_DURATION,
    POLL_FAILURES,
    POLL_LAST_SUCCESS,
    QUARANTINED,
)
from services.poller.orders import fingerprint, parse_order
from services.poller.repository import Polls
from services.poller.settings import LengowSource, PollerSettings
from shared.contracts import Envelope, EventType, LengowStatus, OrderSnapshot
from shared.envelope_parsing import describe_validation_error
from shared.logging import get_logger

log = get_logger(__name__)

SOURCE = "poller"
#: Open orders older than the catch-up's window read again per source and day (one call
#: each, from the same budget as the polls): the oldest first, the rest on the next days.
REREAD_LIMIT = 500
#: A clock further than this from Lengow's is worth an operator's look.
CLOCK_SKEW_WARNING_SECONDS = 60.0

PublishEvent = Callable[[Envelope[Any]], Awaitable[None]]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def quarantine_key(raw: dict[str, Any], marketplace: str) -> tuple[str, str]:
    """How an unreadable order is filed: its own name when it has one."""
    named = raw.get("marketplace_order_id")
    order_id = str(named) if named not in (None, "") else f"(unnamed {fingerprint(raw)[:16]})"
    where = raw.get("marketplace")
    return (str(where) if isinstance(where, str) and where else marketplace, order_id[:200])


def unknown_status(raw: dict[str, Any]) -> str | None:
    """The order's Lengow status when this version does not know it (Lengow may add one):
    such an order is kept as what it is, not as a malformed one."""
    status = raw.get("lengow_status")
    if isinstance(status, str) and status and status not in KNOWN_STATUSES:
        return status
    return None


KNOWN_STATUSES = frozenset(status.value for status in LengowStatus)


def _readable_time(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def whole_seconds(moment: datetime) -> datetime:
    """Lengow's date filters carry no fractions: a window ends on the next whole second (so
    it holds every change made until now) and the watermark is exactly what was asked for."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


PageT = TypeVar("PageT")


async def read_ahead(pages: AsyncIterator[PageT]) -> AsyncIterator[PageT]:
    """Ask for the next page while the caller handles this one: at 100 orders a page, a
    3-day catch-up is a thousand round trips to Lengow, and each would otherwise wait for the
    previous page to be published."""
    upcoming: asyncio.Future[PageT] = asyncio.ensure_future(anext(pages))
    try:
        while True:
            try:
                page = await upcoming
            except StopAsyncIteration:
                return
            upcoming = asyncio.ensure_future(anext(pages))
            yield page
    finally:
        upcoming.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await upcoming


@dataclass
class PollReport:
    source: str
    kind: schedule.PollKind
    window: schedule.Window
    started_at: datetime
    fetched: int = 0
    published: int = 0
    unchanged: int = 0
    malformed: int = 0
    unknown_status: int = 0
    filtered: int = 0
    #: Orders a catch-up published again although their fingerprint had not changed.
    republished: int = 0
    locked_out: bool = False
    error: str | None = None
    correlation_id: str = field(default_factory=lambda: str(uuid.uuid4()))


class OrderSync:
    """Reads orders from Lengow and publishes an ``order.changed`` for each real change."""

    def __init__(
        self,
        settings: PollerSettings,
        repository: Polls,
        clients: Mapping[str, LengowOrders],
        publish: PublishEvent,
        clock: Clock = utc_now,
    ) -> None:
        self._settings = settings
        self._repository = repository
        self._clients = clients
        self._publish = publish
        self._clock = clock
        self._publishing = asyncio.Semaphore(settings.publish_concurrency)
        #: When each source's last poll ended (monotonic seconds), for readiness.
        self.last_finished: dict[str, float] = {}
        #: Orders in quarantine per source at the end of its last poll (absent: unknown), so
        #: that a catch-up's thousand pages look for orders to release only when some are.
        self._in_quarantine: dict[str, int] = {}

    def _window_end(self, source: LengowSource) -> datetime:
        """Now on Lengow's clock (its ``Date``), in whole seconds; a skew is measured and
        reported."""
        local = self._clock()
        lengow = self._clients[source.name].lengow_time(time.monotonic(), local)
        skew = (local - lengow).total_seconds()
        CLOCK_SKEW.labels(source.name).set(skew)
        if abs(skew) > CLOCK_SKEW_WARNING_SECONDS:
            log.warning(
                "poll.clock_skew",
                source=source.name,
                skew_seconds=round(skew, 1),
                resolution="windows end on Lengow's clock",
            )
        return whole_seconds(lengow)

    async def incremental(self, source: LengowSource) -> PollReport:
        now = self._window_end(source)
        window = schedule.incremental_window(
            await self._repository.watermark(source.name),
            now,
            overlap=timedelta(seconds=self._settings.poll_overlap_seconds),
            first_lookback=timedelta(days=self._settings.catchup_days),
        )
        return await self.poll(source, "incremental", window)

    async def catchup_if_due(self, source: LengowSource) -> PollReport | None:
        now = self._clock()
        last = await self._repository.last_catchup(source.name)
        if not schedule.catchup_due(now, self._settings.catchup_time, last):
            return None
        return await self.catchup(source)

    async def catchup(self, source: LengowSource) -> PollReport:
        now = self._window_end(source)
        report = await self.poll(
            source, "catchup", schedule.catchup_window(now, self._settings.catchup_days)
        )
        if report.error is None and not report.locked_out:
            await self._repository.record_catchup(source.name, now.date())
            try:
                await self.reread_open_orders(source, now)
            except LengowError as exc:  # tomorrow's re-read tries again
                log.warning("reread.failed", source=source.name, error=str(exc))
        return report

    async def reread_open_orders(self, source: LengowSource, now: datetime) -> int:
        """Read again at Lengow the orders older than the catch-up's window that are not in a
        final status, and publish those whose status there differs from the last one
        published (noted for the daily report as drifted); returns how many differed."""
        before = now - timedelta(days=self._settings.catchup_days)
        client = self._clients[source.name]
        drifted: list[tuple[OrderSnapshot, str]] = []
        for marketplace, order_id, published in await self._repository.open_orders(
            source.name, before, REREAD_LIMIT
        ):
            raw = await client.order(source.account_id, marketplace, order_id)
            if raw is None:
                continue
            try:
                snapshot = parse_order(raw, source.name)
            except ValidationError:
                continue  # the next poll that reads it quarantines it with its reason
            if snapshot.lengow_status.value != published:
                drifted.append((snapshot, fingerprint(raw)))
        correlation = str(uuid.uuid4())
        await asyncio.gather(*(self._publish_order(s, correlation) for s, _ in drifted))
        await self._repository.save_fingerprints(
            source.name,
            [(s.marketplace, s.marketplace_order_id, d, s.lengow_status.value) for s, d in drifted],
        )
        await self._repository.note_catchup_finds(source.name, drifted, {}, kind="drifted")
        log.info("reread.done", source=source.name, drifted=len(drifted))
        return len(drifted)

    async def poll(
        self, source: LengowSource, kind: schedule.PollKind, window: schedule.Window
    ) -> PollReport:
        report = PollReport(source.name, kind, window, started_at=self._clock())
        began = time.monotonic()
        bound = log.bind(source=source.name, poll=kind, correlation_id=report.correlation_id)
        async with self._repository.source_lock(source.name) as session:
            if session is None:
                report.locked_out = True
                bound.info("poll.skipped_locked", reason="another replica is polling this source")
                return report
            bound.info(
                "poll.started",
                updated_from=window.updated_from.isoformat(),
                updated_to=window.updated_to.isoformat(),
            )
            started = time.monotonic()
            try:
                client = self._clients[source.name]
                async for page in read_ahead(
                    client.order_pages(
                        account_id=source.account_id,
                        marketplace=source.marketplace,
                        updated_from=window.updated_from,
                        updated_to=window.updated_to,
                        page_size=self._settings.lengow_page_size,
                    )
                ):
                    await self._handle_page(session, source, page, report)
            except LengowError as exc:
                report.error = str(exc)
                POLL_FAILURES.labels(source.name).inc()
                bound.error("poll.failed", error=report.error, published=report.published)
            else:
                if kind == "incremental":
                    # Never past Lengow's now when the window was chosen: on a first poll the
                    # skew is learnt from the poll's own answers.
                    lengow_start = whole_seconds(client.lengow_time(began, report.started_at))
                    await session.advance_watermark(
                        source.name,
                        min(window.updated_to, lengow_start, await self._held(session, source)),
                    )
                self._in_quarantine[source.name] = await session.quarantined(source.name)
                QUARANTINED.labels(source.name).set(self._in_quarantine[source.name])
                POLL_DURATION.labels(source.name, kind).observe(time.monotonic() - started)
                POLL_LAST_SUCCESS.labels(source.name, kind).set_to_current_time()
                bound.info(
                    "poll.succeeded",
                    fetched=report.fetched,
                    published=report.published,
                    unchanged=report.unchanged,
                    malformed=report.malformed,
                    unknown_status=report.unknown_status,
                    filtered=report.filtered,
                    republished=report.republished,
                )
            await session.record_run(report)
        self.last_finished[source.name] = time.monotonic()
        return report

    async def _held(self, session: Polls, source: LengowSource) -> datetime:
        """The watermark does not pass an order in quarantine, so that every poll reads it
        again, for as long as a catch-up could still reach it."""
        since = self._clock() - timedelta(days=self._settings.catchup_days)
        held = await session.quarantine_hold(source.name, since)
        return held if held is not None else datetime.max.replace(tzinfo=UTC)

    async def _handle_page(
        self,
        session: Polls,
        source: LengowSource,
        page: list[dict[str, Any]],
        report: PollReport,
    ) -> None:
        report.fetched += len(page)
        parsed: list[tuple[OrderSnapshot, str]] = []
        quarantined: list[tuple[str, str, str, str, dict[str, Any], datetime]] = []
        for raw in page:
            try:
                snapshot = parse_order(raw, source.name)
            except ValidationError as exc:
                quarantined.append(self._quarantined(source, raw, exc, report))
                continue
            if snapshot.is_delivered_by_marketplace and not source.import_fulfillment:
                report.filtered += 1
                ORDERS_SKIPPED.labels(source.name, "fulfillment").inc()
                continue
            parsed.append((snapshot, fingerprint(raw)))

        await session.quarantine(source.name, quarantined)
        if self._in_quarantine.get(source.name) != 0 or quarantined:
            released = await session.release(
                [(s.marketplace, s.marketplace_order_id) for s, _ in parsed]
            )
            for _, order_id in released:
                log.info("poll.order_released", source=source.name, order_id=order_id)
        known = await session.fingerprints(
            [(s.marketplace, s.marketplace_order_id) for s, _ in parsed]
        )
        changed = [
            (snapshot, digest)
            for snapshot, digest in parsed
            if known.get((snapshot.marketplace, snapshot.marketplace_order_id)) != digest
        ]
        report.unchanged += len(parsed) - len(changed)
        if report.kind == "catchup":
            # What the polls missed, for the daily report.
            await session.note_catchup_finds(source.name, changed, known)
            # Every order of the window again, changed or not: whatever was lost downstream
            # (a dead letter, a restored backup) is repaired by the next catch-up; the
            # processor ignores the snapshots it already has.
            report.republished += len(parsed) - len(changed)
            changed = parsed
        # Each publish waits for the broker's confirm; only confirmed orders are remembered.
        await asyncio.gather(
            *(self._publish_order(snapshot, report.correlation_id) for snapshot, _ in changed)
        )
        await session.save_fingerprints(
            source.name,
            [
                (s.marketplace, s.marketplace_order_id, digest, s.lengow_status.value)
                for s, digest in changed
            ],
        )
        report.published += len(changed)
        ORDERS_PUBLISHED.labels(source.name).inc(len(changed))

    def _quarantined(
        self,
        source: LengowSource,
        raw: dict[str, Any],
        error: ValidationError,
        report: PollReport,
    ) -> tuple[str, str, str, str, dict[str, Any], datetime]:
        """How an order that cannot be handled is kept: what it is, and why."""
        marketplace, order_id = quarantine_key(raw, source.marketplace)
        status = unknown_status(raw)
        if status is not None:
            kind = "unknown_status"
            reason = f"Lengow status {status!r} is not known to this version"
            report.unknown_status += 1
        else:
            kind, reason = "malformed", describe_validation_error(error)
            report.malformed += 1
        ORDERS_SKIPPED.labels(source.name, kind).inc()
        log.warning(
            "poll.order_quarantined",
            source=source.name,
            order_id=order_id,
            kind=kind,
            reason=reason,
            kept="in quarantine: read again at every poll until it can be handled",
        )
        held_from = _readable_time(raw.get("updated_at")) or report.window.updated_from
        return (marketplace, order_id, kind, reason, raw, held_from)

    async def _publish_order(self, snapshot: OrderSnapshot, correlation_id: str) -> None:
        envelope = Envelope[OrderSnapshot](
            type=EventType.ORDER_CHANGED,
            source=SOURCE,
            correlation_id=correlation_id,
            data=snapshot,
        )
        async with self._publishing:
            await self._publish(envelope)

"""The poller against the Lengow sandbox (real HTTP), the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import pytest

from sandbox.marketplace import now
from services.poller.app import Poller
from services.poller.lengow import LengowCredentialsError
from tests.bus import publish, recording
from tests.factories import encode, envelope
from tests.integration.conftest import RunningSandbox

pytestmark = pytest.mark.integration

StartPoller = Callable[..., Awaitable[Poller]]


def source(poller: Poller, index: int = 0):  # type: ignore[no-untyped-def]
    return poller.settings.lengow_sources[index]


def create_orders(sandbox: RunningSandbox, count: int, **kwargs: object) -> list[str]:
    minutes_ago = float(kwargs.pop("minutes_ago", 30))  # type: ignore[arg-type]
    at = now() - timedelta(minutes=minutes_ago)
    return [
        sandbox.marketplace.create_order(at=at + timedelta(seconds=i), **kwargs).id  # type: ignore[arg-type]
        for i in range(count)
    ]


async def ordersctl_json(amqp_url: str, database_url: str, *args: str) -> tuple[int, str]:
    from tests.integration.test_ordersctl import ordersctl

    return await ordersctl(amqp_url, database_url, "--json", *args)


def published_ids(events) -> list[str]:  # type: ignore[no-untyped-def]
    return [m["data"]["marketplace_order_id"] for m in events.of_type("order.changed")]


async def test_every_page_is_read_and_every_order_published(
    amqp_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    ids = create_orders(sandbox, 230)
    poller = await poller_factory(lengow_page_size=20)
    async with recording(amqp_url, "orders.events", "order.changed") as events:
        report = await poller.sync.incremental(source(poller))
        await events.wait_for(lambda r: len(r.of_type("order.changed")) >= 230)
    assert report.error is None
    assert (report.fetched, report.published, report.malformed) == (230, 230, 0)
    assert sandbox.calls("GET /v3.0/orders") == 12  # 230 orders, 20 a page
    assert sorted(published_ids(events)) == sorted(ids)
    message = events.of_type("order.changed")[0]
    assert message["source"] == "poller"
    assert message["data"]["currency"] == "EUR"
    assert message["data"]["billing_address"]["email"].endswith("@example.fr")


async def test_unchanged_orders_are_not_published_again(
    amqp_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    """An incremental poll whose window (here: a long overlap) holds orders already
    published publishes only those that changed."""
    ids = create_orders(sandbox, 30)
    poller = await poller_factory(poll_overlap_seconds=3600)
    first = await poller.sync.incremental(source(poller))
    assert first.published == 30
    sandbox.marketplace.move(ids[0], "waiting_shipment", now())
    async with recording(amqp_url, "orders.events", "order.changed") as events:
        second = await poller.sync.incremental(source(poller))
        await events.wait_for(lambda r: len(r.of_type("order.changed")) >= 1)
        await asyncio.sleep(0.3)
    assert (second.fetched, second.published, second.unchanged) == (30, 1, 29)
    assert published_ids(events) == [ids[0]]
    assert events.of_type("order.changed")[0]["data"]["lengow_status"] == "waiting_shipment"


async def test_the_catchup_publishes_every_order_of_its_window_again(
    amqp_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    """Before, the catch-up skipped what it had already published, so an order.changed lost
    downstream (dead-lettered, say) was never repaired. Now it publishes every order again;
    the processor ignores what it has."""
    ids = create_orders(sandbox, 30)
    poller = await poller_factory()
    first = await poller.sync.catchup(source(poller))
    assert first.published == 30
    sandbox.marketplace.move(ids[0], "waiting_shipment", now())
    async with recording(amqp_url, "orders.events", "order.changed") as events:
        second = await poller.sync.catchup(source(poller))
        await events.wait_for(lambda r: len(r.of_type("order.changed")) >= 30)
    assert (second.fetched, second.published, second.unchanged) == (30, 30, 29)
    assert second.republished == 29
    assert sorted(published_ids(events)) == sorted(ids)


async def test_open_orders_older_than_the_catchup_are_read_again_and_drift_is_repaired(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    """An order out of the catch-up's 3 days whose status changed at Lengow without the polls
    seeing it (its change predates their window) is re-read once a day: published again, and
    noted for the daily report."""
    ids = create_orders(sandbox, 6)
    poller = await poller_factory()
    await poller.sync.catchup(source(poller))
    sandbox.marketplace.move(ids[0], "waiting_shipment", now())
    days_later = now() + timedelta(days=4)  # every fingerprint is now older than the window
    async with recording(amqp_url, "orders.events", "order.changed") as events:
        assert await poller.sync.reread_open_orders(source(poller), days_later) == 1
        await events.wait_for(lambda r: len(r.of_type("order.changed")) >= 1)
        await asyncio.sleep(0.3)
    assert published_ids(events) == [ids[0]]
    # Published as it is now: the next re-read finds nothing more to say.
    assert await poller.sync.reread_open_orders(source(poller), days_later) == 0
    conn = await asyncpg.connect(database_url, server_settings={"search_path": "poller"})
    try:
        finds = await conn.fetch(
            "SELECT marketplace_order_id, kind, lengow_status FROM catchup_finds ORDER BY id"
        )
    finally:
        await conn.close()
    # No poll ran before the catch-up: it found all six, then the re-read the one that moved.
    assert [row["kind"] for row in finds[:6]] == ["new"] * 6
    assert [tuple(row) for row in finds[6:]] == [(ids[0], "drifted", "waiting_shipment")]


async def test_watermark_moves_after_success_and_the_next_window_overlaps(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    create_orders(sandbox, 5)
    poller = await poller_factory(poll_overlap_seconds=120)
    first = await poller.sync.incremental(source(poller))
    # First poll ever: it looks back as far as the catch-up does.
    assert now() - first.window.updated_from > timedelta(days=2, hours=23)
    mark = first.window.updated_to

    late = create_orders(sandbox, 1, minutes_ago=0)
    second = await poller.sync.incremental(source(poller))
    assert second.window.updated_from == mark - timedelta(seconds=120)
    assert (second.fetched, second.published) == (1, 1)
    assert late

    # A failed poll leaves the watermark where it was.
    sandbox.state.faults.statuses.extend([500] * 10)
    failed = await poller.sync.incremental(source(poller))
    assert failed.error is not None
    third = await poller.sync.incremental(source(poller))
    assert third.window.updated_from == second.window.updated_to - timedelta(seconds=120)


async def test_daily_catchup_reads_the_last_three_days(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    poller = await poller_factory()
    await poller.sync.incremental(source(poller))  # sets the watermark to now
    # Orders Lengow indexed late: amended two days ago, invisible to the incremental window.
    recent = create_orders(sandbox, 4, minutes_ago=2 * 24 * 60)
    create_orders(sandbox, 3, minutes_ago=4 * 24 * 60)  # older than three days
    incremental = await poller.sync.incremental(source(poller))
    assert incremental.fetched == 0
    report = await poller.sync.catchup(source(poller))
    assert (report.fetched, report.published) == (4, 4)
    assert len(recent) == 4
    # Once done for the day, it is not due again until tomorrow.
    assert await poller.sync.catchup_if_due(source(poller)) is None


async def test_session_token_is_renewed_when_lengow_rejects_it(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    create_orders(sandbox, 3)
    poller = await poller_factory()
    await poller.sync.catchup(source(poller))
    sandbox.state.tokens = {
        t: (a, now() - timedelta(seconds=1)) for t, (a, _) in sandbox.state.tokens.items()
    }  # every session expires
    create_orders(sandbox, 2, minutes_ago=1)
    report = await poller.sync.catchup(source(poller))
    assert report.error is None
    assert (report.published, report.republished) == (5, 3)  # a catch-up publishes all again
    assert sandbox.calls("POST /access/get_token") == 2


async def test_server_errors_and_rate_limits_are_retried(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    create_orders(sandbox, 60)
    poller = await poller_factory(lengow_page_size=20)
    sandbox.state.faults.statuses.extend([500, 429, 503])
    sandbox.state.faults.retry_after = 0.2
    report = await poller.sync.catchup(source(poller))
    assert report.error is None
    assert report.published == 60
    # 3 pages + 3 failed answers (the token call took the first fault and was retried too).
    total = sandbox.calls("GET /v3.0/orders") + sandbox.calls("POST /access/get_token")
    assert total == 3 + 1 + 3


async def test_lengow_down_is_a_clear_failure_and_publishes_nothing(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    create_orders(sandbox, 5)
    poller = await poller_factory(lengow_max_attempts=3)
    sandbox.state.faults.statuses.extend([502] * 3)
    report = await poller.sync.incremental(source(poller))
    assert report.error is not None
    assert "after 3 attempts" in report.error
    assert report.published == 0
    assert await poller.sync._repository.watermark("ManoMano Standard") is None


async def test_bad_credentials_give_a_clear_error(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    poller = await poller_factory(
        lengow_sources=[
            {"name": "Wrong", "account_id": 1000, "access_token": "nope", "secret": "nope"}
        ]
    )
    report = await poller.sync.incremental(source(poller))
    assert report.error is not None
    assert "refused the credentials" in report.error
    assert sandbox.calls("POST /access/get_token") == 1  # not retried
    with pytest.raises(LengowCredentialsError):
        await poller._clients["Wrong"].get("/v3.0/orders")


async def test_malformed_orders_are_skipped_and_the_poll_goes_on(
    sandbox: RunningSandbox, poller_factory: StartPoller, caplog: pytest.LogCaptureFixture
) -> None:
    create_orders(sandbox, 10)
    sandbox.state.faults.malformed_orders = 2
    poller = await poller_factory()
    with caplog.at_level(logging.WARNING):
        report = await poller.sync.catchup(source(poller))
    assert (report.fetched, report.published, report.malformed) == (10, 8, 2)
    skipped = [r for r in caplog.records if "poll.order_quarantined" in r.getMessage()]
    assert len(skipped) == 2
    assert "updated_at" in skipped[0].getMessage()


async def test_fulfillment_orders_follow_the_setting(
    amqp_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    standard = create_orders(sandbox, 3)
    fulfilled = create_orders(sandbox, 2, fulfillment=True)
    sources = [
        {
            "name": "with",
            "account_id": 1000,
            "access_token": "sandbox-access-token",
            "secret": "sandbox-secret",
        },
        {
            "name": "without",
            "account_id": 1000,
            "access_token": "sandbox-access-token",
            "secret": "sandbox-secret",
            "import_fulfillment": False,
        },
    ]
    without = await poller_factory(lengow_sources=sources[1:], poller_db_schema="poller_a")
    report = await without.sync.catchup(source(without))
    assert (report.published, report.filtered) == (3, 2)

    with_fulfillment = await poller_factory(lengow_sources=sources[:1], poller_db_schema="poller_b")
    async with recording(amqp_url, "orders.events", "order.changed") as events:
        report = await with_fulfillment.sync.catchup(source(with_fulfillment))
        await events.wait_for(lambda r: len(r.of_type("order.changed")) >= 5)
    assert (report.published, report.filtered) == (5, 0)
    flags = {
        m["data"]["marketplace_order_id"]: m["data"]["is_delivered_by_marketplace"]
        for m in events.of_type("order.changed")
    }
    assert flags == {**dict.fromkeys(standard, False), **dict.fromkeys(fulfilled, True)}
    assert all(
        m["data"]["lengow_status"] == "shipped"
        for m in events.of_type("order.changed")
        if m["data"]["marketplace_order_id"] in fulfilled
    )


async def test_two_replicas_poll_one_at_a_time(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    create_orders(sandbox, 20)
    first, second = await poller_factory(), await poller_factory()
    sandbox.state.faults.delays.append(1.0)  # the first poll holds the lock a while
    reports = await asyncio.gather(
        first.sync.catchup(source(first)), second.sync.catchup(source(second))
    )
    assert sorted(r.locked_out for r in reports) == [False, True]
    assert sum(r.published for r in reports) == 20


async def test_secrets_never_reach_the_logs(
    sandbox: RunningSandbox, poller_factory: StartPoller, caplog: pytest.LogCaptureFixture
) -> None:
    create_orders(sandbox, 3)
    poller = await poller_factory()
    sandbox.state.faults.statuses.extend([500, 429])
    sandbox.state.faults.retry_after = 0.05
    with caplog.at_level(logging.DEBUG):
        await poller.sync.catchup(source(poller))
        sandbox.state.tokens.clear()
        await poller.sync.catchup(source(poller))
    text = caplog.text + repr(poller.settings)
    tokens = list(sandbox.state.tokens)
    assert tokens
    for secret in ["sandbox-access-token", "sandbox-secret", *tokens]:
        assert secret not in text


async def test_sync_command_polls_now(
    amqp_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    ids = create_orders(sandbox, 4)
    poller = await poller_factory()
    await poller.broker.start()
    async with recording(amqp_url, "orders.events", "order.changed") as events:
        await publish(
            amqp_url,
            "orders.commands",
            "poller.sync",
            encode(envelope({"catchup": True}, "poller.sync", source="ops")),
        )
        await events.wait_for(lambda r: len(r.of_type("order.changed")) >= 4)
    assert sorted(published_ids(events)) == sorted(ids)


async def test_schedule_polls_on_its_own(
    amqp_url: str, database_url: str, sandbox: RunningSandbox
) -> None:
    from services.poller.app import create_app
    from tests.integration.conftest import poller_settings

    ids = create_orders(sandbox, 3)
    app = create_app(poller_settings(amqp_url, database_url, sandbox, poll_interval_seconds=0.3))
    async with recording(amqp_url, "orders.events", "order.changed") as events, app:
        await events.wait_for(lambda r: len(r.of_type("order.changed")) >= 3)
        later = create_orders(sandbox, 1, minutes_ago=0)
        await events.wait_for(lambda r: later[0] in published_ids(r))
    # The first incremental poll and the day's first catch-up both publish the first three.
    assert set(published_ids(events)) == set(ids + later)


async def test_orders_changing_during_the_read_are_not_skipped(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    """An order updated between two pages leaves the window and shifts the others: the
    window is read again, so none of them falls between two pages."""
    ids = create_orders(sandbox, 60)
    poller = await poller_factory(lengow_page_size=20)
    moved = False

    async def move_one_after_the_first_page() -> None:
        nonlocal moved
        # The second page's request is in (and held 0.3 s): the first page was answered.
        while sandbox.calls("GET /v3.0/orders") < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        sandbox.marketplace.move(ids[0], "waiting_shipment", now() + timedelta(hours=1))
        moved = True

    mover = asyncio.create_task(move_one_after_the_first_page())
    sandbox.state.faults.delays.extend([0.0, 0.0, 0.3])  # token, page 1, page 2
    report = await poller.sync.catchup(source(poller))
    await mover
    assert moved
    published = await poller.sync._repository.fingerprints(
        [("manomano_fr", order_id) for order_id in ids]
    )
    assert set(ids[1:]) <= {order_id for _, order_id in published}
    assert report.error is None
    assert sandbox.calls("GET /v3.0/orders") > 3  # the window was read again


async def test_a_catchup_larger_than_the_budget_is_throttled_never_refused(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    """Lengow allows so many calls per route and window; the client spends within it."""
    sandbox.state.rate_limit, sandbox.state.rate_window = 10, 2.0
    create_orders(sandbox, 600, minutes_ago=2 * 24 * 60)
    poller = await poller_factory(
        lengow_page_size=20, lengow_calls_per_minute=9, lengow_budget_window_seconds=2.0
    )
    started = time.monotonic()
    report = await poller.sync.catchup(source(poller))
    elapsed = time.monotonic() - started
    assert report.error is None
    assert report.published == 600
    pages = sandbox.calls("GET /v3.0/orders")
    assert pages >= 30
    assert dict(sandbox.state.rate_limited) == {}  # not one 429
    assert elapsed >= 2.0 * (pages // 9)  # it waited for its budget instead


async def test_each_source_polls_on_its_own_schedule(
    sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    """A source stuck in a long read never holds back another's poll; readiness says which."""
    sources = [
        {
            "name": name,
            "account_id": 1000,
            "access_token": "sandbox-access-token",
            "secret": "sandbox-secret",
        }
        for name in ("ManoMano Fulfillment", "ManoMano Standard")
    ]
    poller = await poller_factory(
        lengow_sources=sources, poll_interval_seconds=0.2, lengow_timeout_seconds=0.3
    )
    stuck = asyncio.Event()

    async def never_ending(**_: object):  # type: ignore[no-untyped-def]
        stuck.set()
        await asyncio.Event().wait()
        yield []

    poller._clients["ManoMano Fulfillment"].order_pages = never_ending  # type: ignore[method-assign]
    create_orders(sandbox, 3)
    poller._started_at = time.monotonic()
    tasks = [asyncio.create_task(poller.run_schedule(s)) for s in poller.settings.lengow_sources]
    try:
        await asyncio.wait_for(stuck.wait(), 5)
        await asyncio.sleep(1.5)
        assert "ManoMano Fulfillment" not in poller.sync.last_finished
        runs = await poller.pool.fetchval(
            "SELECT count(*) FROM poll_runs WHERE source = 'ManoMano Standard'"
        )
        assert runs >= 3  # polled again and again meanwhile
        with pytest.raises(TimeoutError, match="ManoMano Fulfillment is overdue"):
            await poller.polls_check()
    finally:
        for task in tasks:
            task.cancel()


async def test_a_poller_whose_clock_runs_ahead_misses_no_change(
    sandbox: RunningSandbox, poller_factory: StartPoller, caplog: pytest.LogCaptureFixture
) -> None:
    """Windows end on Lengow's clock (its Date header), not on ours."""
    from datetime import UTC, datetime

    from services.poller.metrics import CLOCK_SKEW

    poller = await poller_factory(poll_overlap_seconds=30)
    poller.sync._clock = lambda: datetime.now(UTC) + timedelta(minutes=3)
    create_orders(sandbox, 2, minutes_ago=10)
    first = await poller.sync.incremental(source(poller))
    assert first.published == 2
    # Changed at Lengow after the first poll, two seconds back: Lengow's clock is read from
    # the whole seconds of its Date header, so an order of this very instant may fall after
    # the window's end, and be read by the poll after (as it should), not this one.
    late = create_orders(sandbox, 1, minutes_ago=2 / 60)
    with caplog.at_level(logging.WARNING):
        second = await poller.sync.incremental(source(poller))
    assert (second.fetched, second.published) == (1, 1)
    assert late
    skew = CLOCK_SKEW.labels("ManoMano Standard")._value.get()
    assert 170 < skew < 190
    assert "poll.clock_skew" in caplog.text


async def test_an_unreadable_order_is_kept_and_read_again_until_it_reads(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    """Before, the order was skipped and the watermark moved past it: it was lost until the
    daily catch-up. Now it is quarantined with its reason and JSON, and the next poll reads it."""
    ids = create_orders(sandbox, 5, minutes_ago=10)
    sandbox.state.faults.malformed_orders = 1
    poller = await poller_factory(poll_overlap_seconds=0)
    first = await poller.sync.incremental(source(poller))
    assert (first.published, first.malformed) == (4, 1)
    [kept] = await poller.pool.fetch("SELECT * FROM quarantined_orders")
    assert kept["marketplace_order_id"] in ids
    assert "updated_at" in kept["reason"]
    assert kept["raw"]["updated_at"] == "yesterday-ish"  # as Lengow sent it

    code, output = await ordersctl_json(amqp_url, database_url, "quarantine")
    assert code == 0, output
    assert [row["marketplace_order_id"] for row in json.loads(output)] == [
        kept["marketplace_order_id"]
    ]

    # The next incremental poll, the order reads again (Lengow fixed it): published, released.
    async with recording(amqp_url, "orders.events", "order.changed") as events:
        second = await poller.sync.incremental(source(poller))
        await events.wait_for(lambda r: len(r.of_type("order.changed")) >= 1)
    assert published_ids(events) == [kept["marketplace_order_id"]]
    assert second.published == 1
    assert await poller.pool.fetchval("SELECT count(*) FROM quarantined_orders") == 0


async def test_an_order_in_a_status_lengow_added_is_kept_as_such(
    amqp_url: str, database_url: str, sandbox: RunningSandbox, poller_factory: StartPoller
) -> None:
    """Lengow adds a status this version does not know: the order is kept in quarantine as an
    unknown status (not as a malformed order), named in ordersctl, and the watermark holds."""
    ids = create_orders(sandbox, 3, minutes_ago=10)
    sandbox.marketplace.orders[ids[1]].raw["lengow_status"] = "waiting_payment"
    poller = await poller_factory(poll_overlap_seconds=0)
    report = await poller.sync.incremental(source(poller))
    assert (report.published, report.malformed, report.unknown_status) == (2, 0, 1)
    [kept] = await poller.pool.fetch("SELECT * FROM quarantined_orders")
    assert (kept["marketplace_order_id"], kept["kind"]) == (ids[1], "unknown_status")
    assert "'waiting_payment'" in kept["reason"]
    code, output = await ordersctl_json(amqp_url, database_url, "quarantine")
    assert code == 0, output
    assert [(r["marketplace_order_id"], r["kind"]) for r in json.loads(output)] == [
        (ids[1], "unknown_status")
    ]
    run = await poller.pool.fetchrow("SELECT * FROM poll_runs ORDER BY id DESC LIMIT 1")
    assert run["unknown_status"] == 1

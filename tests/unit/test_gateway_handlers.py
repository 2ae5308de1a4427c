"""The action gateway on the in-memory store and a scripted Lengow: no server, milliseconds a
test. The store passes the suite PostgreSQL passes (tests/action_store.py); the scripted
Lengow keeps actions as the sandbox does (flat arguments, ``queued`` then ``processed`` or
``errors``) and filters its listing by the documented filters the gateway's reads rely on.
The integration tests run the gateway on the sandbox over HTTP, and the fault suite makes
Lengow lose its replies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.poller.gateway import ActionBusyError, ActionGateway
from services.poller.lengow import (
    LengowInDoubtError,
    LengowRefusedError,
    LengowUnavailableError,
)
from services.poller.memory import FingerprintRow, MemoryActionStore, PollerData
from services.poller.settings import PollerSettings
from shared.contracts import Envelope, OrderActionRequested
from shared.settlement import UnprocessableMessageError

SOURCE = "ManoMano Standard"
ORDER = "M1"

#: What a POST does: None, Lengow answers with the id; LOST, Lengow acts and the reply is lost.
LOST = "lost"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ScriptedLengow:
    """Lengow's actions route, each POST taking the next scripted outcome."""

    clock: Clock
    listed: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[Exception | str | None] = field(default_factory=list)
    posts: int = 0

    async def actions(self, **params: Any) -> list[dict[str, Any]]:
        # The sandbox's documented filters; ``updated_from`` only narrows what the gateway
        # matches by id, so every action is listed whatever it asks.
        found = list(self.listed)
        if order_id := params.get("marketplace_order_id"):
            found = [a for a in found if a["marketplace_order_id"] == order_id]
        if (queued := params.get("queued")) is not None:
            found = [a for a in found if a["queued"] is (str(queued).lower() == "true")]
        return [dict(action) for action in found]

    async def post_action(self, body: Mapping[str, Any]) -> Any:
        self.posts += 1
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if isinstance(outcome, Exception):
            raise outcome
        action = {
            **{k: str(v) for k, v in body.items()},
            "id": 500 + len(self.listed),
            "queued": True,
            "processed": False,
            "errors": None,
            "created_at": self.clock().isoformat(),
        }
        self.listed.append(action)
        if outcome == LOST:
            raise LengowInDoubtError("the POST left and no answer came")
        return {**action, "queued": False}

    def answer(self, *, errors: str | None = None) -> None:
        """The marketplace answers every action: processed, or refused with ``errors``."""
        for action in self.listed:
            action.update(queued=False, processed=errors is None, errors=errors)


@dataclass
class Gateway:
    gateway: ActionGateway
    store: MemoryActionStore
    data: PollerData
    lengow: ScriptedLengow
    refusals: list[str]

    def events(self) -> list[tuple[str, Any]]:
        return [(m.routing_key, m.envelope.data) for m in self.data.outbox]

    def parts(self, command_id: str = "c-1") -> list[tuple[str, str | None]]:
        return [(p.state, p.lengow_action_id) for p in self.data.actions[command_id].parts]


def gateway(**overrides: Any) -> Gateway:
    settings = PollerSettings.model_validate(
        {
            "lengow_sources": [
                {"name": SOURCE, "account_id": 1000, "access_token": "t", "secret": "s"}
            ],
            **overrides,
        }
    )
    clock, data, refusals = Clock(), PollerData(), []
    data.fingerprints[("manomano_fr", ORDER)] = FingerprintRow("f", SOURCE, "accepted", clock())
    lengow = ScriptedLengow(clock)
    store = MemoryActionStore(data, clock)
    made = ActionGateway(settings, store, {SOURCE: lengow}, refusals.append, clock)
    return Gateway(made, store, data, lengow, refusals)


def requested(
    action: str = "ship",
    command_id: str = "c-1",
    marketplace: str = "manomano_fr",
    **arguments: Any,
) -> Envelope[OrderActionRequested]:
    return Envelope[OrderActionRequested](
        type="order.action_requested",
        source="processor",
        correlation_id="corr-1",
        data=OrderActionRequested(
            marketplace=marketplace,
            marketplace_order_id=ORDER,
            command_id=command_id,
            action_type=action,  # type: ignore[arg-type]
            arguments=arguments,
        ),
    )


SHIP = {"carrier": "colissimo", "tracking_number": "6A1"}


async def test_an_action_is_sent_once_and_its_verdict_published_once() -> None:
    g = gateway()
    message = requested(**SHIP)
    await g.gateway.on_action_requested(message)
    await g.gateway.on_action_requested(message)  # redelivered: not sent again
    assert g.lengow.posts == 1 and g.parts() == [("sent", "500")]
    assert await g.gateway.follow_up() == 0  # the marketplace has not answered
    g.lengow.answer()
    assert await g.gateway.follow_up() == 1
    assert await g.gateway.follow_up() == 0
    ((type_, event),) = g.events()
    assert type_ == "order.action_succeeded" and event.action_id == "500"
    assert g.data.outbox[0].envelope.correlation_id == "corr-1"


async def test_a_reply_lost_after_lengow_acted_is_adopted_not_sent_again() -> None:
    g = gateway()
    g.lengow.outcomes = [LOST]
    await g.gateway.on_action_requested(requested(**SHIP))
    assert g.parts() == [("sending", None)]  # in doubt
    await g.gateway.follow_up()
    assert g.lengow.posts == 1 and g.parts() == [("sent", "500")]


async def test_the_plugins_duplicate_check_finds_the_same_action_still_queued() -> None:
    g = gateway()
    g.lengow.listed.append(
        {
            **{k: str(v) for k, v in SHIP.items()},
            "id": 42,
            "marketplace_order_id": ORDER,
            "action_type": "ship",
            "queued": True,
            "processed": False,
            "errors": None,
            "created_at": g.lengow.clock().isoformat(),
        }
    )
    await g.gateway.on_action_requested(requested(**SHIP))
    assert g.lengow.posts == 0 and g.parts() == [("sent", "42")]


async def test_a_post_that_never_left_is_sent_again_by_the_follow_up() -> None:
    g = gateway()
    g.lengow.outcomes = [LengowUnavailableError("connection refused")]
    await g.gateway.on_action_requested(requested(**SHIP))
    assert g.parts() == [("new", None)]
    await g.gateway.follow_up()
    assert g.lengow.posts == 2 and g.parts() == [("sent", "500")]


async def test_a_refusal_fails_the_command_with_lengow_s_reason() -> None:
    g = gateway()
    g.lengow.outcomes = [LengowRefusedError(530, "carrier not accepted")]
    await g.gateway.on_action_requested(requested(**SHIP))
    ((type_, event),) = g.events()
    assert type_ == "order.action_failed" and event.errors == ["carrier not accepted"]
    assert g.refusals == [SOURCE]  # the marketplace's rules are read again


async def test_the_marketplace_s_refusal_fails_the_command_naming_the_line() -> None:
    g = gateway()
    await g.gateway.on_action_requested(requested("refund", line=["L1", "L2"]))
    assert g.lengow.posts == 2 and [state for state, _ in g.parts()] == ["sent", "sent"]
    g.lengow.answer(errors="refund already done")
    assert await g.gateway.follow_up() == 1
    ((type_, event),) = g.events()
    assert type_ == "order.action_failed"
    assert event.errors == ["line L1: refund already done", "line L2: refund already done"]


async def test_an_action_in_doubt_too_often_is_given_up_with_the_reason() -> None:
    g = gateway(action_max_attempts=2)
    g.lengow.outcomes = [LengowInDoubtError("timeout"), LengowInDoubtError("timeout")]
    await g.gateway.on_action_requested(requested(**SHIP))
    await g.gateway.follow_up()  # not at Lengow: sent again, in doubt again
    await g.gateway.follow_up()  # not at Lengow, two attempts spent: given up
    assert g.lengow.posts == 2
    ((type_, event),) = g.events()
    assert type_ == "order.action_failed" and "gave up after 2 attempts" in event.errors[0]


async def test_an_action_the_marketplace_never_answers_fails_as_too_old() -> None:
    g = gateway()
    await g.gateway.on_action_requested(requested(**SHIP))
    g.lengow.clock.now += timedelta(days=3, seconds=1)
    assert await g.gateway.follow_up() == 1
    ((type_, event),) = g.events()
    assert type_ == "order.action_failed" and "too old" in event.errors[0]


async def test_a_command_another_worker_holds_is_retried_later() -> None:
    g = gateway()
    async with g.store.locked("c-1"):
        with pytest.raises(ActionBusyError):
            await g.gateway.on_action_requested(requested(**SHIP))
    assert g.lengow.posts == 0


async def test_an_order_of_no_configured_marketplace_is_rejected_with_the_reason() -> None:
    g = gateway()
    message = requested(marketplace="amazon_fr", **SHIP)
    with pytest.raises(UnprocessableMessageError, match="amazon_fr"):
        await g.gateway.on_action_requested(message)
    assert g.lengow.posts == 0 and g.data.actions == {}

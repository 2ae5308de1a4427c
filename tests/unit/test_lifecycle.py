from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.processor import lifecycle
from services.processor.lifecycle import (
    Action,
    MoveRejected,
    Observation,
    OrderState,
    SnapshotUpdated,
    Stale,
    StatusMoved,
    allowed_actions,
    classify_move,
    observe,
)
from shared.contracts import LengowStatus as S

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_manomano_table_of_allowed_actions() -> None:
    assert allowed_actions(S.WAITING_ACCEPTANCE) == {Action.ACCEPT, Action.REFUSE}
    assert allowed_actions(S.WAITING_SHIPMENT) == {Action.SHIP}
    assert allowed_actions(S.SHIPPED) == {Action.REFUND}
    for status in (S.ACCEPTED, S.REFUNDING, S.REFUSED, S.REFUNDED, S.CANCELED):
        assert allowed_actions(status) == frozenset(), status


@pytest.mark.parametrize(
    ("current", "observed", "kind"),
    [
        (S.WAITING_ACCEPTANCE, S.ACCEPTED, "normal"),
        (S.ACCEPTED, S.WAITING_SHIPMENT, "normal"),
        (S.WAITING_SHIPMENT, S.SHIPPED, "normal"),
        (S.SHIPPED, S.REFUNDING, "normal"),
        (S.REFUNDING, S.REFUNDED, "normal"),
        (S.WAITING_ACCEPTANCE, S.REFUSED, "normal"),
        (S.WAITING_ACCEPTANCE, S.WAITING_SHIPMENT, "skipped"),
        (S.WAITING_ACCEPTANCE, S.SHIPPED, "skipped"),
        (S.WAITING_SHIPMENT, S.REFUNDED, "skipped"),
        (S.SHIPPED, S.WAITING_SHIPMENT, None),
        (S.SHIPPED, S.WAITING_ACCEPTANCE, None),
        (S.REFUSED, S.ACCEPTED, None),
        (S.REFUNDED, S.SHIPPED, None),
        (S.CANCELED, S.WAITING_SHIPMENT, None),
        (S.SHIPPED, S.CANCELED, None),
    ],
)
def test_classify_move(current: S, observed: S, kind: str | None) -> None:
    assert classify_move(current, observed) == kind


def test_first_observation_creates_the_order() -> None:
    outcome = observe(None, Observation(S.WAITING_ACCEPTANCE, at(0)))
    assert isinstance(outcome, StatusMoved)
    assert outcome.kind == "initial"
    assert outcome.from_status is None
    assert outcome.state == OrderState(S.WAITING_ACCEPTANCE, at(0), 1, False)
    assert not outcome.announces_shipment


def test_fulfillment_order_arrives_shipped_and_announces_shipment() -> None:
    outcome = observe(None, Observation(S.SHIPPED, at(0)))
    assert isinstance(outcome, StatusMoved)
    assert outcome.announces_shipment
    assert outcome.state.shipment_announced


def test_shipment_is_announced_once() -> None:
    state = OrderState(S.WAITING_SHIPMENT, at(0), 2, False)
    shipped = observe(state, Observation(S.SHIPPED, at(1)))
    assert isinstance(shipped, StatusMoved) and shipped.announces_shipment
    closed = observe(shipped.state, Observation(S.CLOSED, at(2)))
    assert isinstance(closed, StatusMoved) and not closed.announces_shipment


def test_shipment_missed_between_two_polls_is_still_announced() -> None:
    state = OrderState(S.WAITING_SHIPMENT, at(0), 2, False)
    outcome = observe(state, Observation(S.REFUNDING, at(30)))
    assert isinstance(outcome, StatusMoved)
    assert outcome.kind == "skipped"
    assert outcome.announces_shipment


def test_order_first_seen_after_shipment_is_not_announced() -> None:
    """Shipped before this system saw it: its invoice is not this system's to send."""
    first = observe(None, Observation(S.REFUNDING, at(0)))
    assert isinstance(first, StatusMoved)
    assert not first.announces_shipment
    later = observe(first.state, Observation(S.REFUNDED, at(5)))
    assert isinstance(later, StatusMoved)
    assert not later.announces_shipment


def test_stale_and_equal_times_change_nothing() -> None:
    state = OrderState(S.SHIPPED, at(10), 3, True)
    assert observe(state, Observation(S.WAITING_SHIPMENT, at(5))) == Stale()
    assert observe(state, Observation(S.SHIPPED, at(10))) == Stale()


def test_newer_snapshot_same_status_updates_snapshot_only() -> None:
    state = OrderState(S.WAITING_SHIPMENT, at(0), 2, False)
    outcome = observe(state, Observation(S.WAITING_SHIPMENT, at(3)))
    assert outcome == SnapshotUpdated(OrderState(S.WAITING_SHIPMENT, at(3), 3, False))


def test_backwards_move_is_rejected_with_a_reason() -> None:
    state = OrderState(S.SHIPPED, at(0), 3, True)
    outcome = observe(state, Observation(S.WAITING_ACCEPTANCE, at(5)))
    assert isinstance(outcome, MoveRejected)
    assert outcome.current == S.SHIPPED and outcome.observed == S.WAITING_ACCEPTANCE
    assert "waiting_acceptance cannot follow shipped" in outcome.reason


# --- Properties -------------------------------------------------------------------------

observations = st.lists(
    st.builds(
        Observation,
        status=st.sampled_from(list(S)),
        updated_at=st.integers(min_value=0, max_value=50).map(at),
    ),
    max_size=25,
)


def fold(seen: list[Observation]) -> tuple[OrderState | None, list[tuple[S | None, S]]]:
    state: OrderState | None = None
    moves: list[tuple[S | None, S]] = []
    for observation in seen:
        outcome = observe(state, observation)
        if isinstance(outcome, StatusMoved | SnapshotUpdated):
            if isinstance(outcome, StatusMoved):
                moves.append((outcome.from_status, outcome.state.status))
            state = outcome.state
    return state, moves


@given(observations)
def test_every_applied_move_is_one_the_lifecycle_allows(seen: list[Observation]) -> None:
    state, moves = fold(seen)
    for from_status, to_status in moves[1:]:
        assert from_status is not None
        assert to_status in lifecycle.reachable_from(from_status), (from_status, to_status)
    if state is not None:
        assert state.version >= len(moves)
        # Source times only move forward.
        applied_times = [o.updated_at for o in seen if o.updated_at <= state.source_updated_at]
        assert state.source_updated_at == max(applied_times)


@given(observations, st.data())
def test_replaying_any_observation_changes_nothing(
    seen: list[Observation], data: st.DataObject
) -> None:
    if not seen:
        return
    state, _ = fold(seen)
    replayed = data.draw(st.sampled_from(seen))
    assert fold([*seen, replayed])[0] == state


@given(observations)
def test_shipment_is_announced_at_most_once(seen: list[Observation]) -> None:
    announced = 0
    state: OrderState | None = None
    for observation in seen:
        outcome = observe(state, observation)
        if isinstance(outcome, StatusMoved):
            announced += outcome.announces_shipment
            state = outcome.state
        elif isinstance(outcome, SnapshotUpdated):
            state = outcome.state
    assert announced <= 1
    if state is not None and state.status in lifecycle.SHIPMENT_STATUSES:
        assert state.shipment_announced


def test_a_refund_of_an_announced_order_is_announced_each_time() -> None:
    shipped = OrderState(S.SHIPPED, at(0), 3, True)
    partial = observe(shipped, Observation(S.PARTIAL_REFUNDED, at(1)))
    assert isinstance(partial, StatusMoved) and partial.announces_refund
    again = observe(partial.state, Observation(S.REFUNDING, at(2)))
    assert isinstance(again, StatusMoved) and not again.announces_refund
    whole = observe(again.state, Observation(S.REFUNDED, at(3)))
    assert isinstance(whole, StatusMoved) and whole.announces_refund


def test_a_refund_of_an_order_never_invoiced_here_is_not_announced() -> None:
    first = observe(None, Observation(S.REFUNDING, at(0)))
    assert isinstance(first, StatusMoved)
    refunded = observe(first.state, Observation(S.REFUNDED, at(1)))
    assert isinstance(refunded, StatusMoved) and not refunded.announces_refund


def test_a_refund_seen_with_its_shipment_announces_both() -> None:
    waiting = OrderState(S.WAITING_SHIPMENT, at(0), 2, False)
    outcome = observe(waiting, Observation(S.REFUNDED, at(9)))
    assert isinstance(outcome, StatusMoved)
    assert outcome.announces_shipment and outcome.announces_refund


def test_the_settled_statuses_the_poller_stops_rereading_are_the_lifecycles() -> None:
    from services.processor.lifecycle import SETTLED_STATUSES
    from shared.contracts import SETTLED_LENGOW_STATUSES

    assert SETTLED_STATUSES == SETTLED_LENGOW_STATUSES

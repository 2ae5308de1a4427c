"""The ManoMano order lifecycle: pure rules, no I/O.

The marketplace is the source of truth for an order's status, so an observed move is recorded
even when the poller missed the steps in between ("skipped"). A move that no path of the
lifecycle allows (backwards, or out of a final status) is flagged and not applied.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache

from shared.contracts import LengowStatus, TransitionKind

S = LengowStatus


class Action(StrEnum):
    ACCEPT = "accept"
    REFUSE = "refuse"
    SHIP = "ship"
    REFUND = "refund"


#: What a seller may ask at each status (ManoMano's table in Lengow's help page).
ALLOWED_ACTIONS: Mapping[LengowStatus, frozenset[Action]] = {
    S.WAITING_ACCEPTANCE: frozenset({Action.ACCEPT, Action.REFUSE}),
    S.WAITING_SHIPMENT: frozenset({Action.SHIP}),
    S.SHIPPED: frozenset({Action.REFUND}),
}

#: The moves the marketplace makes one step at a time. Every other forward move is a skip.
NEXT_STATUSES: Mapping[LengowStatus, frozenset[LengowStatus]] = {
    S.NEW: frozenset({S.WAITING_ACCEPTANCE, S.ACCEPTED, S.REFUSED, S.CANCELED}),
    S.WAITING_ACCEPTANCE: frozenset({S.ACCEPTED, S.REFUSED, S.CANCELED}),
    S.ACCEPTED: frozenset({S.WAITING_SHIPMENT, S.CANCELED}),
    S.WAITING_SHIPMENT: frozenset({S.SHIPPED, S.CANCELED}),
    S.SHIPPED: frozenset({S.CLOSED, S.TO_REFUND, S.REFUNDING, S.PARTIAL_REFUNDED, S.REFUNDED}),
    S.CLOSED: frozenset({S.TO_REFUND, S.REFUNDING, S.PARTIAL_REFUNDED, S.REFUNDED}),
    S.TO_REFUND: frozenset({S.REFUNDING, S.REFUNDED}),
    S.REFUNDING: frozenset({S.REFUNDED, S.PARTIAL_REFUNDED}),
    S.PARTIAL_REFUNDED: frozenset({S.REFUNDING, S.REFUNDED}),
    S.REFUSED: frozenset(),
    S.CANCELED: frozenset(),
    S.REFUNDED: frozenset(),
}

#: Nothing more is expected of the seller: the final statuses, and closed (delivered; a
#: refund that may still come needs no address). Personal data goes a set time after these.
SETTLED_STATUSES = frozenset(
    {status for status, following in NEXT_STATUSES.items() if not following} | {S.CLOSED}
)

#: Reaching one of these means the goods left: the customer's invoice is due.
SHIPMENT_STATUSES = frozenset({S.SHIPPED, S.CLOSED})
#: Statuses only an order that shipped can have.
SHIPPED_OR_LATER = frozenset(
    {S.SHIPPED, S.CLOSED, S.TO_REFUND, S.REFUNDING, S.PARTIAL_REFUNDED, S.REFUNDED}
)
#: Reaching one of these means money went back to the customer: a credit note is due for an
#: order whose shipment (hence invoice) was announced.
REFUND_STATUSES = frozenset({S.PARTIAL_REFUNDED, S.REFUNDED})


@cache
def reachable_from(status: LengowStatus) -> frozenset[LengowStatus]:
    """Every status some sequence of normal moves leads to from ``status`` (itself excluded)."""
    seen: set[LengowStatus] = set()
    frontier = list(NEXT_STATUSES[status])
    while frontier:
        current = frontier.pop()
        if current not in seen:
            seen.add(current)
            frontier.extend(NEXT_STATUSES[current])
    seen.discard(status)
    return frozenset(seen)


def classify_move(current: LengowStatus, observed: LengowStatus) -> TransitionKind | None:
    """``normal`` or ``skipped`` for a possible move, None for an impossible one."""
    if observed in NEXT_STATUSES[current]:
        return "normal"
    if observed in reachable_from(current):
        return "skipped"
    return None


def allowed_actions(status: LengowStatus) -> frozenset[Action]:
    return ALLOWED_ACTIONS.get(status, frozenset())


@dataclass(frozen=True)
class OrderState:
    status: LengowStatus
    source_updated_at: datetime
    version: int
    shipment_announced: bool


@dataclass(frozen=True)
class Observation:
    """What one poll saw of an order: its status and when the marketplace last changed it."""

    status: LengowStatus
    updated_at: datetime


@dataclass(frozen=True)
class Stale:
    """Not newer than what is stored: nothing changes."""


@dataclass(frozen=True)
class SnapshotUpdated:
    state: OrderState


@dataclass(frozen=True)
class StatusMoved:
    state: OrderState
    from_status: LengowStatus | None
    kind: TransitionKind
    announces_shipment: bool

    @property
    def announces_refund(self) -> bool:
        """Each move into a refund status of an order announced as shipped: the notifier
        credits what its earlier credit notes did not."""
        return self.state.status in REFUND_STATUSES and self.state.shipment_announced


@dataclass(frozen=True)
class MoveRejected:
    current: LengowStatus
    observed: LengowStatus
    reason: str


Outcome = Stale | SnapshotUpdated | StatusMoved | MoveRejected


def observe(state: OrderState | None, seen: Observation) -> Outcome:
    """Decide what an observed snapshot does to an order (None: never seen before)."""
    if state is None:
        created = OrderState(
            status=seen.status,
            source_updated_at=seen.updated_at,
            version=1,
            shipment_announced=seen.status in SHIPMENT_STATUSES,
        )
        return StatusMoved(created, None, "initial", created.shipment_announced)

    if seen.updated_at <= state.source_updated_at:
        return Stale()

    if seen.status == state.status:
        return SnapshotUpdated(
            replace(state, source_updated_at=seen.updated_at, version=state.version + 1)
        )

    kind = classify_move(state.status, seen.status)
    if kind is None:
        return MoveRejected(
            state.status,
            seen.status,
            f"{seen.status} cannot follow {state.status}: the move is backwards"
            " or leaves a final status",
        )

    # A poll may miss the shipped status itself (shipped, then refunding, between two polls):
    # any move from before shipment to after it means the order shipped.
    announces = (
        seen.status in SHIPPED_OR_LATER
        and state.status not in SHIPPED_OR_LATER
        and not state.shipment_announced
    )
    moved = OrderState(
        status=seen.status,
        source_updated_at=seen.updated_at,
        version=state.version + 1,
        shipment_announced=state.shipment_announced or announces,
    )
    return StatusMoved(moved, state.status, kind, announces)


#: Lengow's clock and ours agree within this; a snapshot dated further ahead is not Lengow's
#: (a forged or broken one) and would shadow every real change until that date.
FUTURE_TOLERANCE = timedelta(minutes=5)


def from_the_future(updated_at: datetime, now: datetime) -> str | None:
    """Why a snapshot dated ``updated_at`` is refused at ``now``, or None."""
    if updated_at > now + FUTURE_TOLERANCE:
        return (
            f"snapshot dated {updated_at.isoformat()}, more than"
            f" {FUTURE_TOLERANCE.total_seconds() / 60:g} minutes ahead of now"
        )
    return None

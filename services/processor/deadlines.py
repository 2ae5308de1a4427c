"""ManoMano's deadlines on an order: pure rules, no I/O.

An order waiting for acceptance must be accepted within the acceptance delay after it was
placed (a setting: ManoMano's 48 hours by default); an accepted order must ship by Lengow's
``max_shipping_date`` (the earliest of its lines), else by the ``shipping_deadline`` of the
order's meta (``order_meta`` or ``meta``: both spellings are seen). A deadline only matters
while the order waits on the seller for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from shared.contracts import Deadline, EventType, LengowStatus, OrderSnapshot

S = LengowStatus

#: ManoMano's: an order not accepted within 48 hours of being placed is cancelled.
DEFAULT_ACCEPTANCE_DELAY = timedelta(hours=48)

#: While the order is in one of these statuses, the deadline waits on the seller.
PENDING_ON: dict[Deadline, frozenset[LengowStatus]] = {
    Deadline.ACCEPTANCE: frozenset({S.NEW, S.WAITING_ACCEPTANCE}),
    Deadline.SHIPMENT: frozenset({S.ACCEPTED, S.WAITING_SHIPMENT}),
}


class Phase(StrEnum):
    APPROACHING = "approaching"
    MISSED = "missed"

    @property
    def event(self) -> EventType:
        if self is Phase.APPROACHING:
            return EventType.ORDER_DEADLINE_APPROACHING
        return EventType.ORDER_DEADLINE_MISSED


@dataclass(frozen=True)
class DueDates:
    acceptance: datetime | None
    shipment: datetime | None

    def of(self, deadline: Deadline) -> datetime | None:
        return self.acceptance if deadline is Deadline.ACCEPTANCE else self.shipment


def _instant(value: Any) -> datetime | None:
    """A date Lengow wrote, or None when it wrote none or nothing readable (a deadline that
    cannot be read is not a deadline: it never raises an alert by mistake)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip():
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def shipping_deadline(snapshot: OrderSnapshot) -> datetime | None:
    lines = [
        _instant((line.model_extra or {}).get("max_shipping_date")) for line in snapshot.lines()
    ]
    known = [moment for moment in lines if moment is not None]
    if known:
        return min(known)
    extra = snapshot.model_extra or {}
    for key in ("order_meta", "meta"):
        meta = extra.get(key)
        if isinstance(meta, dict):
            moment = _instant(meta.get("shipping_deadline"))
            if moment is not None:
                return moment
    return None


def due_dates(snapshot: OrderSnapshot, acceptance_delay: timedelta) -> DueDates:
    placed = snapshot.marketplace_order_date
    return DueDates(
        acceptance=None if placed is None else placed + acceptance_delay,
        shipment=shipping_deadline(snapshot),
    )


def phase_at(now: datetime, due_at: datetime, lead: timedelta) -> Phase | None:
    """Where an order still waiting for ``due_at`` stands ``now``: past it, within ``lead``
    of it, or neither (None)."""
    if now >= due_at:
        return Phase.MISSED
    if now >= due_at - lead:
        return Phase.APPROACHING
    return None

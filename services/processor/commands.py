"""Whether a seller's command may go to the marketplace: pure rules, no I/O.

The rules are ManoMano's (mission.md): which action each status allows, and each action's
mandatory arguments. A refusal says, in words a person can act on, what is wrong.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.processor.lifecycle import Action, allowed_actions
from shared.contracts import (
    AcceptOrder,
    LengowStatus,
    OrderCommand,
    RefundOrder,
    RefuseOrder,
    ShipOrder,
)

OTHER_CARRIER = "Other"

#: ManoMano's carriers, as Lengow's marketplace document lists them (settings may replace it).
MANOMANO_CARRIERS = (
    "Colissimo",
    "Chronopost",
    "DHL",
    "DPD",
    "GLS",
    "TNT",
    "UPS",
    "Fedex",
    "Geodis",
    "DB Schenker",
    OTHER_CARRIER,
)
MANOMANO_REFUND_REASONS = (
    "product_unavailable",
    "customer_cancellation",
    "damaged_product",
    "delivery_failure",
    "other",
)

#: The statuses that show the marketplace carried the action out.
ACTION_OUTCOMES: Mapping[Action, frozenset[LengowStatus]] = {
    Action.ACCEPT: frozenset({LengowStatus.ACCEPTED, LengowStatus.WAITING_SHIPMENT}),
    Action.REFUSE: frozenset({LengowStatus.REFUSED}),
    Action.SHIP: frozenset({LengowStatus.SHIPPED}),
    Action.REFUND: frozenset(
        {LengowStatus.REFUNDING, LengowStatus.REFUNDED, LengowStatus.PARTIAL_REFUNDED}
    ),
}

ACTIONS: Mapping[type[OrderCommand], Action] = {
    AcceptOrder: Action.ACCEPT,
    RefuseOrder: Action.REFUSE,
    ShipOrder: Action.SHIP,
    RefundOrder: Action.REFUND,
}


@dataclass(frozen=True)
class Decision:
    action: Action
    refusal: str | None = None
    #: What the marketplace action needs, as Lengow's actions API names it.
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.refusal is None


def decide(
    command: OrderCommand,
    status: LengowStatus | None,
    *,
    carriers: Collection[str] = MANOMANO_CARRIERS,
    refund_reasons: Collection[str] = MANOMANO_REFUND_REASONS,
) -> Decision:
    action = ACTIONS[type(command)]
    order = f"order {command.marketplace_order_id}"
    if status is None:
        return Decision(action, f"{order} is unknown: no order with this id has been seen")
    allowed = allowed_actions(status)
    if action not in allowed:
        options = ", ".join(sorted(allowed)) or "none"
        return Decision(
            action, f"{order} is {status}: {action} is not allowed (allowed now: {options})"
        )
    if isinstance(command, ShipOrder):
        return _ship(command, action, carriers)
    if isinstance(command, RefundOrder):
        return _refund(command, action, refund_reasons)
    return Decision(action)


def _ship(command: ShipOrder, action: Action, carriers: Collection[str]) -> Decision:
    if command.carrier not in carriers:
        return Decision(
            action,
            f"carrier {command.carrier!r} is not in the marketplace's list; use one of"
            f" {', '.join(carriers)} (or {OTHER_CARRIER!r} with carrier_name and tracking_url)",
        )
    if command.carrier == OTHER_CARRIER:
        missing = [
            name
            for name, value in (
                ("carrier_name", command.carrier_name),
                ("tracking_url", command.tracking_url),
            )
            if not (value and value.strip())
        ]
        if missing:
            return Decision(
                action,
                f"carrier {OTHER_CARRIER} needs carrier_name and tracking_url"
                f" (missing: {', '.join(missing)})",
            )
    arguments = {
        key: value
        for key, value in {
            "carrier": command.carrier,
            "carrier_name": command.carrier_name,
            "tracking_number": command.tracking_number,
            "tracking_url": command.tracking_url,
            "line": command.line_ids,
        }.items()
        if value
    }
    return Decision(action, arguments=arguments)


def _refund(command: RefundOrder, action: Action, reasons: Collection[str]) -> Decision:
    missing = [
        name
        for name, value in (
            ("refund_reason", command.refund_reason),
            ("refund_shipping_fees", command.refund_shipping_fees),
        )
        if value is None or value == ""
    ]
    if missing:
        return Decision(
            action,
            f"refund needs refund_reason and refund_shipping_fees (missing: {', '.join(missing)})",
        )
    if command.refund_reason not in reasons:
        return Decision(
            action,
            f"refund_reason {command.refund_reason!r} is not accepted; use one of"
            f" {', '.join(reasons)}",
        )
    return Decision(
        action,
        arguments={
            "refund_reason": command.refund_reason,
            "refund_shipping_fees": command.refund_shipping_fees,
        },
    )

"""Whether a seller's command may go to the marketplace: pure rules, no I/O.

What each status allows, the mandatory arguments and the accepted values come from the
marketplace's rules (``rules.MarketplaceRules``, Lengow's marketplaces document). ManoMano's
own rules from the seeds hold on top: carrier "Other" needs ``carrier_name`` and
``tracking_url``; a refund needs ``refund_reason`` and ``refund_shipping_fees``. Values are sent
as the marketplace's codes (a label is accepted on input), ``carrier_name`` only with "Other",
and empty optional arguments are dropped, as Lengow's plugins do. A refusal says, in words a
person can act on, what is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from services.processor.lifecycle import Action
from services.processor.rules import OTHER_CARRIER, ActionRule, MarketplaceRules
from shared.contracts import (
    AcceptOrder,
    LengowStatus,
    OrderCommand,
    RefundOrder,
    RefuseOrder,
    ShipOrder,
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


def decide(command: OrderCommand, status: LengowStatus | None, rules: MarketplaceRules) -> Decision:
    action = ACTIONS[type(command)]
    order = f"order {command.marketplace_order_id}"
    if status is None:
        return Decision(action, f"{order} is unknown: no order with this id has been seen")
    allowed = rules.allowed_at(status)
    rule = rules.action(action.value)
    if rule is None or action.value not in allowed:
        options = ", ".join(sorted(allowed)) or "none"
        return Decision(
            action, f"{order} is {status}: {action} is not allowed (allowed now: {options})"
        )
    if isinstance(command, ShipOrder):
        return _ship(command, action, rule, rules)
    if isinstance(command, RefundOrder):
        return _refund(command, action, rule, rules)
    return _with_arguments(action, rule, rules, {})


def _not_accepted(rules: MarketplaceRules, rule: ActionRule, name: str, given: Any) -> str:
    values = rule.argument(name)
    if values is None or not values.values:
        where = "Lengow's" if rules.from_lengow else "the configured"
        return (
            f"{name} {given!r} cannot be checked: {where} rules for {rules.marketplace} list no"
            f" accepted values (has the poller read Lengow's marketplaces document?)"
        )
    return (
        f"{name} {given!r} is not accepted by {rules.marketplace}; accepted: {values.described()}"
    )


def _with_arguments(
    action: Action, rule: ActionRule, rules: MarketplaceRules, given: Mapping[str, Any]
) -> Decision:
    """Check every argument against the rule: mandatory ones present, values accepted (sent
    as their code), empty optional ones dropped, unknown ones refused."""
    missing = [name for name in rule.mandatory if _empty(given.get(name))]
    if missing:
        return Decision(
            action,
            f"{action} needs {', '.join(rule.mandatory)} (missing: {', '.join(missing)})",
        )
    arguments: dict[str, Any] = {}
    for name, value in given.items():
        if _empty(value):
            continue
        if not rule.accepts(name):
            return Decision(action, f"{rules.marketplace} takes no {name} for {action}")
        values = rule.argument(name)
        if values is not None and isinstance(value, str):
            code = values.code_of(value)
            if code is None:
                return Decision(action, _not_accepted(rules, rule, name, value))
            value = code
        arguments[name] = value
    return Decision(action, arguments=arguments)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or value == []


def _ship(
    command: ShipOrder, action: Action, rule: ActionRule, rules: MarketplaceRules
) -> Decision:
    carriers = rule.argument("carrier")
    code = carriers.code_of(command.carrier) if carriers is not None else None
    if code is None:
        if carriers is None or not carriers.values:
            return Decision(action, _not_accepted(rules, rule, "carrier", command.carrier))
        return Decision(
            action,
            f"carrier {command.carrier!r} is not in the marketplace's list; accepted:"
            f" {carriers.described()} (Other needs carrier_name and tracking_url)",
        )
    other = code.casefold() == OTHER_CARRIER
    if other:
        missing = [
            name
            for name, value in (
                ("carrier_name", command.carrier_name),
                ("tracking_url", command.tracking_url),
            )
            if _empty(value)
        ]
        if missing:
            return Decision(
                action,
                "carrier Other needs carrier_name and tracking_url"
                f" (missing: {', '.join(missing)})",
            )
    return _with_arguments(
        action,
        rule,
        rules,
        {
            "carrier": code,
            # Sent only with "Other": other marketplaces refuse the action otherwise.
            "carrier_name": command.carrier_name if other else None,
            "tracking_number": command.tracking_number,
            "tracking_url": command.tracking_url,
            "line": list(command.line_ids or []),
        },
    )


def _refund(
    command: RefundOrder, action: Action, rule: ActionRule, rules: MarketplaceRules
) -> Decision:
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
    return _with_arguments(
        action,
        rule,
        rules,
        {
            "refund_reason": command.refund_reason,
            "refund_shipping_fees": command.refund_shipping_fees,
        },
    )


class CommandInFlight(Protocol):
    @property
    def command_id(self) -> str: ...

    @property
    def arguments(self) -> dict[str, Any]: ...


def already_in_flight(
    command: OrderCommand, decision: Decision, in_flight: Sequence[CommandInFlight]
) -> str | None:
    """One ship and one refund per order (per line, for line-level ships) while one is
    accepted and neither done nor failed: a second one would ship or refund twice. The
    refusal names the first command, so that its caller can ask about it instead."""
    if decision.action not in (Action.SHIP, Action.REFUND):
        return None
    mine = set(decision.arguments.get("line") or [])
    for other in in_flight:
        theirs = set(other.arguments.get("line") or [])
        if mine and theirs and not mine & theirs:
            continue  # other lines
        return (
            f"a {decision.action} of order {command.marketplace_order_id} is already in"
            f" flight: command {other.command_id} was accepted and is waiting for the"
            f" marketplace's verdict; send that command again (same command_id) to see its"
            f" state, or wait for order.action_failed before asking again"
        )
    return None

"""A marketplace's rules for seller actions, read from Lengow's marketplaces document: pure.

``GET /v3.0/marketplaces`` (published by the poller as ``marketplace.rules_changed``) is the
source of truth for the statuses at which each action is allowed, its mandatory and optional
arguments, and the codes each argument accepts. Until it has been read once, the fallback is
ManoMano's table from the seeds (``lifecycle.ALLOWED_ACTIONS``) with the values configured in
the processor's settings (none by default: a value that cannot be checked is refused).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from services.processor.lifecycle import ALLOWED_ACTIONS, Action

#: ManoMano's rule (the seeds): carrier "Other" needs carrier_name and tracking_url.
OTHER_CARRIER = "other"


@dataclass(frozen=True)
class ArgumentRule:
    """The values one argument accepts: code -> label (empty and free: anything)."""

    values: Mapping[str, str] = field(default_factory=dict)
    free: bool = False

    def code_of(self, given: str) -> str | None:
        """The code for ``given``, a code or a label (labels compared case-insensitively);
        None when the marketplace does not accept it."""
        if given in self.values:
            return given
        folded = given.strip().casefold()
        for code, label in self.values.items():
            if folded in (code.casefold(), label.casefold()):
                return code
        return given if self.free else None

    def described(self) -> str:
        return ", ".join(
            code if label in ("", code) else f"{code} ({label})"
            for code, label in self.values.items()
        )


@dataclass(frozen=True)
class ActionRule:
    statuses: frozenset[str]
    mandatory: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    arguments: Mapping[str, ArgumentRule] = field(default_factory=dict)

    def accepts(self, name: str) -> bool:
        return name in self.mandatory or name in self.optional

    def argument(self, name: str) -> ArgumentRule | None:
        return self.arguments.get(name)


@dataclass(frozen=True)
class MarketplaceRules:
    marketplace: str
    actions: Mapping[str, ActionRule]
    #: False for the fallback used before Lengow's document was read.
    from_lengow: bool

    def allowed_at(self, status: str) -> frozenset[str]:
        return frozenset(name for name, rule in self.actions.items() if status in rule.statuses)

    def action(self, name: str) -> ActionRule | None:
        return self.actions.get(name)

    @classmethod
    def from_document(cls, marketplace: str, entry: Mapping[str, Any]) -> MarketplaceRules:
        """One marketplace's entry of Lengow's document (``{name, orders: {actions,
        carriers, ...}}``)."""
        found = entry.get("orders")
        orders: Mapping[str, Any] = found if isinstance(found, dict) else {}
        carriers = _values(orders.get("carriers"))
        actions: dict[str, ActionRule] = {}
        for name, spec in (orders.get("actions") or {}).items():
            if not isinstance(spec, dict):
                continue
            described = spec.get("args_description") or {}
            arguments: dict[str, ArgumentRule] = {}
            for arg, description in described.items():
                if not isinstance(description, dict):
                    continue
                values = _values(description.get("valid_values"))
                if arg == "carrier" and not values:
                    values = carriers
                arguments[arg] = ArgumentRule(values, bool(description.get("accept_free_values")))
            if "carrier" not in arguments and carriers and "carrier" in (spec.get("args") or []):
                arguments["carrier"] = ArgumentRule(carriers)
            actions[str(name)] = ActionRule(
                statuses=frozenset(str(s) for s in spec.get("status") or []),
                mandatory=tuple(str(a) for a in spec.get("args") or []),
                optional=tuple(str(a) for a in spec.get("optional_args") or []),
                arguments=arguments,
            )
        return cls(marketplace, actions, from_lengow=True)

    @classmethod
    def fallback(
        cls, marketplace: str, *, carriers: Collection[str], refund_reasons: Collection[str]
    ) -> MarketplaceRules:
        """ManoMano's table from the seeds, with the configured values."""
        statuses: dict[Action, set[str]] = {}
        for status, allowed in ALLOWED_ACTIONS.items():
            for action in allowed:
                statuses.setdefault(action, set()).add(status.value)
        shipping = ("carrier_name", "tracking_number", "tracking_url", "line", "shipping_date")
        specs = {
            Action.ACCEPT: ((), (), {}),
            Action.REFUSE: ((), (), {}),
            Action.SHIP: (
                ("carrier",),
                shipping,
                {"carrier": ArgumentRule({c: c for c in carriers})},
            ),
            Action.REFUND: (
                ("refund_reason", "refund_shipping_fees"),
                (),
                {"refund_reason": ArgumentRule({r: r for r in refund_reasons})},
            ),
        }
        return cls(
            marketplace,
            {
                action.value: ActionRule(frozenset(statuses.get(action, set())), m, o, a)
                for action, (m, o, a) in specs.items()
            },
            from_lengow=False,
        )


def _values(raw: Any) -> dict[str, str]:
    """``{"<code>": {"label": "<label>"}}`` (or a plain list of codes) as code -> label."""
    if isinstance(raw, dict):
        return {
            str(code): str(spec.get("label") or code) if isinstance(spec, dict) else str(spec)
            for code, spec in raw.items()
        }
    if isinstance(raw, list):
        return {str(code): str(code) for code in raw}
    return {}

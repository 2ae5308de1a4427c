"""Lengow's order JSON into the ``order.changed`` contract: lenient at the edge, pure."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from shared.contracts import OrderSnapshot

FULFILLMENT_TYPE = "is_delivered_by_marketplace"


def delivered_by_marketplace(raw: dict[str, Any]) -> bool:
    """Lengow marks fulfillment orders in ``order_types`` (a list of ``{type, label}``, or a
    mapping of flags in some payloads) and on the package trackings."""
    order_types = raw.get("order_types")
    if isinstance(order_types, list):
        if any(isinstance(t, dict) and t.get("type") == FULFILLMENT_TYPE for t in order_types):
            return True
    elif isinstance(order_types, dict) and order_types.get(FULFILLMENT_TYPE):
        return True
    if raw.get(FULFILLMENT_TYPE) is True:
        return True
    for package in raw.get("packages") or []:
        delivery = package.get("delivery") if isinstance(package, dict) else None
        for tracking in (delivery or {}).get("trackings") or []:
            if isinstance(tracking, dict) and tracking.get(FULFILLMENT_TYPE) is True:
                return True
    return False


def blank_text_as_missing(value: Any) -> Any:
    """Lengow's JSON with blank text, its way of saying "no value", as null in every object."""
    if isinstance(value, dict):
        return {k: None if _is_blank(v) else blank_text_as_missing(v) for k, v in value.items()}
    if isinstance(value, list):
        return [blank_text_as_missing(item) for item in value]
    return value


def _is_blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


def parse_order(raw: dict[str, Any], source: str | None = None) -> OrderSnapshot:
    """Raises ``pydantic.ValidationError`` for an order that cannot be understood."""
    data = blank_text_as_missing(raw)
    data["lengow_source"] = source
    currency = data.get("currency")
    if isinstance(currency, dict):
        data["currency"] = currency.get("iso_a3")
    data["is_delivered_by_marketplace"] = delivered_by_marketplace(raw)
    for key in ("marketplace_order_id", "marketplace"):
        if isinstance(data.get(key), int):
            data[key] = str(data[key])
    return OrderSnapshot.model_validate(data)


def fingerprint(raw: dict[str, Any]) -> str:
    """A digest of the whole order as Lengow sent it: equal digests, nothing changed."""
    canonical = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()

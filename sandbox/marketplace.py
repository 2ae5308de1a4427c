"""A simulated ManoMano marketplace behind Lengow: orders, their lifecycle, and seller actions.

Plain Python, no I/O: the HTTP server (``sandbox.server``) exposes it the way Lengow does.
"""

from __future__ import annotations

import itertools
import random
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

MARKETPLACE = "manomano_fr"

MANOMANO_STATUS = {
    "waiting_acceptance": "PENDING",
    "accepted": "PENDING",
    "waiting_shipment": "PREPARATION",
    "shipped": "SHIPPED",
    "refunding": "REFUNDING",
    "refused": "REFUSED",
    "refunded": "REFUNDED",
    "canceled": "CANCELLED",
}

CARRIERS = [
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
    "Other",
]
REFUND_REASONS = [
    "product_unavailable",
    "customer_cancellation",
    "damaged_product",
    "delivery_failure",
    "other",
]

#: The marketplace document Lengow serves for ManoMano (GET /v3.0/marketplaces).
MARKETPLACE_DOCUMENT: dict[str, Any] = {
    MARKETPLACE: {
        "name": "ManoMano FR",
        "country_iso_a2": "FR",
        "orders": {
            "status": {
                "waiting_acceptance": ["PENDING"],
                "waiting_shipment": ["PREPARATION"],
                "shipped": ["SHIPPED"],
                "refunding": ["REFUNDING"],
                "refused": ["REFUSED"],
                "refunded": ["REFUNDED"],
                "canceled": ["CANCELLED"],
            },
            "actions": {
                "accept": {"status": ["waiting_acceptance"], "args": [], "optional_args": []},
                "refuse": {"status": ["waiting_acceptance"], "args": [], "optional_args": []},
                "ship": {
                    "status": ["waiting_shipment"],
                    "args": ["carrier"],
                    "optional_args": [
                        "carrier_name",
                        "tracking_number",
                        "tracking_url",
                        "shipping_date",
                    ],
                    "args_description": {
                        "carrier": {"type": "list", "valid_values": CARRIERS},
                    },
                },
                "refund": {
                    "status": ["shipped"],
                    "args": ["refund_reason", "refund_shipping_fees"],
                    "optional_args": [],
                    "args_description": {
                        "refund_reason": {"type": "list", "valid_values": REFUND_REASONS},
                        "refund_shipping_fees": {"type": "boolean"},
                    },
                },
            },
            "carriers": {name: {"label": name} for name in CARRIERS},
        },
    }
}

FIRST_NAMES = [
    "Camille",
    "Louis",
    "Léa",
    "Hugo",
    "Chloé",
    "Jules",
    "Manon",
    "Lucas",
    "Inès",
    "Théo",
]
LAST_NAMES = [
    "Martin",
    "Bernard",
    "Dubois",
    "Thomas",
    "Robert",
    "Petit",
    "Durand",
    "Leroy",
    "Moreau",
]
STREETS = [
    "rue des Lilas",
    "avenue Jean Jaurès",
    "boulevard Voltaire",
    "place de la Mairie",
    "chemin des Vignes",
    "rue du Moulin",
    "allée des Chênes",
    "rue Victor Hugo",
]
CITIES = [
    ("75011", "Paris"),
    ("69003", "Lyon"),
    ("13008", "Marseille"),
    ("31000", "Toulouse"),
    ("33000", "Bordeaux"),
    ("44000", "Nantes"),
    ("59000", "Lille"),
    ("67000", "Strasbourg"),
]
PRODUCTS = [
    ("Perceuse visseuse sans fil 18V", Decimal("129.90")),
    ("Coffret de 10 forets béton", Decimal("14.50")),
    ("Scie sauteuse pendulaire 650W", Decimal("79.00")),
    ("Mitigeur thermostatique de douche", Decimal("64.99")),
    ("Lot de 4 ampoules LED E27", Decimal("12.90")),
    ("Tondeuse à gazon électrique 1600W", Decimal("189.00")),
    ("Peinture murale blanc mat 10L", Decimal("49.90")),
    ("Escabeau aluminium 5 marches", Decimal("59.90")),
    ("Tuyau d'arrosage 25 m", Decimal("27.50")),
    ("Niveau à bulle 60 cm", Decimal("18.90")),
]
VAT_RATE = Decimal("0.20")
CENT = Decimal("0.01")


class ActionRefused(Exception):  # noqa: N818 - the marketplace's word for it
    """The marketplace refuses an action; the message is what Lengow answers."""


@dataclass
class SimOrder:
    raw: dict[str, Any]
    fulfillment: bool

    @property
    def id(self) -> str:
        return str(self.raw["marketplace_order_id"])

    @property
    def status(self) -> str:
        return str(self.raw["lengow_status"])

    @property
    def updated_at(self) -> datetime:
        return datetime.fromisoformat(self.raw["updated_at"])


@dataclass
class Action:
    id: int
    order_id: str
    action_type: str
    arguments: dict[str, Any]
    created_at: datetime
    apply_at: datetime
    processed: bool = False
    state: str = "new"
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "marketplace_order_id": self.order_id,
            "marketplace": MARKETPLACE,
            "action_type": self.action_type,
            "parameters": self.arguments,
            "processed": self.processed,
            "state": self.state,
            "errors": self.errors,
            "created_at": self.created_at.isoformat(),
        }


def _ascii(name: str) -> str:
    """ "Léa" -> "lea": how French names usually appear in email addresses."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


class Marketplace:
    """Orders of one seller on ManoMano, as Lengow sees them."""

    def __init__(self, *, seed: int = 7, action_delay: timedelta = timedelta(seconds=0)) -> None:
        self.random = random.Random(seed)
        self.orders: dict[str, SimOrder] = {}
        self.actions: dict[int, Action] = {}
        self.action_delay = action_delay
        self._order_numbers = itertools.count(1)
        self._action_ids = itertools.count(1)
        # A poller pages through one query many times: the last answer is kept until an order
        # is created or moves, both through _set_status (a 100,000-order catch-up would
        # otherwise be quadratic here).
        self._revision = 0
        self._last_query: tuple[tuple[Any, ...], list[SimOrder]] | None = None

    # --- Orders --------------------------------------------------------------------------

    def create_order(
        self,
        *,
        at: datetime,
        status: str = "waiting_acceptance",
        fulfillment: bool = False,
        missing_email: bool = False,
        order_id: str | None = None,
    ) -> SimOrder:
        rng = self.random
        number = next(self._order_numbers)
        order_id = order_id or f"M{at:%y%m%d}{number:07d}"
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        zipcode, city = rng.choice(CITIES)
        street = f"{rng.randint(1, 120)} {rng.choice(STREETS)}"
        lines: list[dict[str, Any]] = []
        for index, (title, price) in enumerate(rng.sample(PRODUCTS, rng.randint(1, 3)), 1):
            quantity = rng.randint(1, 3)
            amount = price * quantity
            lines.append(
                {
                    "marketplace_order_line_id": f"{order_id}-{index}",
                    "marketplace_product_id": f"MM{abs(hash(title)) % 10**8:08d}",
                    "merchant_product_id": {"field": "sku", "id": f"SKU-{index:03d}"},
                    "title": title,
                    "quantity": quantity,
                    "amount": _money(amount),
                    "price_unit": _money(price),
                    "shipping": "0.00",
                    "tax": _money(amount - amount / (1 + VAT_RATE)),
                    "marketplace_status": None,
                }
            )
        shipping = (
            Decimal("0.00") if fulfillment else rng.choice([Decimal("0.00"), Decimal("9.90")])
        )
        total = sum((Decimal(line["amount"]) for line in lines), Decimal(0)) + shipping
        address = {
            "first_name": first,
            "last_name": last,
            "full_name": f"{first} {last}",
            "company": "",
            "first_line": street,
            "second_line": "",
            "complement": "",
            "zipcode": zipcode,
            "city": city,
            "common_country_iso_a2": "FR",
            "phone_home": "",
            "phone_mobile": f"06{rng.randint(10**7, 10**8 - 1)}",
            "phone_office": "",
            "vat_number": "",
        }
        email = "" if missing_email else f"{_ascii(first)}.{_ascii(last)}.{number}@example.fr"
        raw: dict[str, Any] = {
            "marketplace_order_id": order_id,
            "marketplace": MARKETPLACE,
            "marketplace_status": None,
            "lengow_status": None,
            "marketplace_order_date": at.isoformat(),
            "marketplace_last_modified_date": at.isoformat(),
            "updated_at": at.isoformat(),
            "imported_at": at.isoformat(),
            "total_order": _money(total),
            "total_tax": _money(total - total / (1 + VAT_RATE)),
            "shipping": _money(shipping),
            "processing_fee": "0.00",
            "commission": _money(total * Decimal("0.15")),
            "currency": {"iso_a3": "EUR", "name": "Euro", "symbol": "€"},
            "original_currency": {"iso_a3": "EUR"},
            "order_comments": None,
            "merchant_order_id": None,
            "is_reimbursed": False,
            "order_types": (
                [{"type": "is_delivered_by_marketplace", "label": "Fulfilled by ManoMano"}]
                if fulfillment
                else []
            ),
            "meta": {"shipping_deadline": (at + timedelta(days=3)).isoformat()},
            "billing_address": {**address, "email": email},
            "packages": [
                {
                    "delivery": {**address, "email": email, "trackings": []},
                    "cart": lines,
                }
            ],
        }
        order = SimOrder(raw, fulfillment)
        self.orders[order_id] = order
        self._set_status(order, "shipped" if fulfillment else status, at)
        if fulfillment:
            self._add_tracking(order, "Geodis", f"GEO{number:09d}", None, True)
        return order

    def _set_status(self, order: SimOrder, status: str, at: datetime) -> None:
        if order.raw["lengow_status"] is not None and at <= order.updated_at:
            at = order.updated_at + timedelta(microseconds=1)
        order.raw["lengow_status"] = status
        order.raw["marketplace_status"] = MANOMANO_STATUS.get(status)
        order.raw["updated_at"] = at.isoformat()
        self._revision += 1
        order.raw["marketplace_last_modified_date"] = at.isoformat()
        for line in order.raw["packages"][0]["cart"]:
            line["marketplace_status"] = MANOMANO_STATUS.get(status)

    def _add_tracking(
        self, order: SimOrder, carrier: str, number: str | None, url: str | None, by_mp: bool
    ) -> None:
        order.raw["packages"][0]["delivery"]["trackings"] = [
            {
                "carrier": carrier,
                "method": None,
                "number": number,
                "url": url,
                "is_delivered_by_marketplace": by_mp,
            }
        ]

    def move(self, order_id: str, status: str, at: datetime) -> SimOrder:
        """The marketplace moves an order on its own (customer, ManoMano, carrier)."""
        order = self.orders[order_id]
        if status == "shipped" and not order.raw["packages"][0]["delivery"]["trackings"]:
            self._add_tracking(
                order,
                "Colissimo",
                f"6A{self.random.randint(10**10, 10**11)}",
                "https://www.laposte.fr/outils/suivre-vos-envois",
                False,
            )
        self._set_status(order, status, at)
        return order

    def advance(self, at: datetime, share: float = 0.3) -> int:
        """Move a random share of open orders one step forward, as real life does."""
        nexts = {
            "waiting_acceptance": ["waiting_shipment", "waiting_shipment", "refused"],
            "accepted": ["waiting_shipment"],
            "waiting_shipment": ["shipped", "shipped", "shipped", "canceled"],
            "shipped": ["shipped", "shipped", "refunding"],
            "refunding": ["refunded"],
        }
        moved = 0
        for order in list(self.orders.values()):
            options = nexts.get(order.status)
            if options and self.random.random() < share:
                target = self.random.choice(options)
                if target != order.status:
                    self.move(order.id, target, at)
                    moved += 1
        return moved

    def query(
        self,
        *,
        updated_from: datetime | None = None,
        updated_to: datetime | None = None,
        order_date_from: datetime | None = None,
        order_date_to: datetime | None = None,
        marketplace_order_id: str | None = None,
        lengow_status: str | None = None,
    ) -> list[SimOrder]:
        key = (
            self._revision,
            updated_from,
            updated_to,
            order_date_from,
            order_date_to,
            marketplace_order_id,
            lengow_status,
        )
        if self._last_query is not None and self._last_query[0] == key:
            return self._last_query[1]
        found = []
        for order in self.orders.values():
            if updated_from and order.updated_at < updated_from:
                continue
            if updated_to and order.updated_at > updated_to:
                continue
            placed = datetime.fromisoformat(order.raw["marketplace_order_date"])
            if order_date_from and placed < order_date_from:
                continue
            if order_date_to and placed > order_date_to:
                continue
            if marketplace_order_id and order.id != marketplace_order_id:
                continue
            if lengow_status and order.status != lengow_status:
                continue
            found.append(order)
        found.sort(key=lambda o: (o.updated_at, o.id))
        self._last_query = (key, found)
        return found

    # --- Seller actions ------------------------------------------------------------------

    def request_action(self, body: dict[str, Any], at: datetime) -> Action:
        """Validate an action the way the marketplace does and queue it."""
        order_id = str(body.get("marketplace_order_id") or "")
        order = self.orders.get(order_id)
        if order is None:
            raise ActionRefused(f"order {order_id!r} not found")
        action_type = str(body.get("action_type") or "")
        spec = MARKETPLACE_DOCUMENT[MARKETPLACE]["orders"]["actions"].get(action_type)
        if spec is None:
            raise ActionRefused(f"action {action_type!r} is not available on ManoMano")
        if order.status not in spec["status"]:
            raise ActionRefused(f"action {action_type} not allowed at status {order.status}")
        missing = [arg for arg in spec["args"] if body.get(arg) in (None, "")]
        if missing:
            raise ActionRefused(f"missing mandatory arguments: {', '.join(missing)}")
        for arg, description in spec.get("args_description", {}).items():
            valid = description.get("valid_values")
            if valid and body.get(arg) not in valid:
                raise ActionRefused(f"{arg} {body.get(arg)!r} is not one of the accepted values")
        other_carrier = action_type == "ship" and body.get("carrier") == "Other"
        if other_carrier and not (body.get("carrier_name") and body.get("tracking_url")):
            raise ActionRefused("carrier Other needs carrier_name and tracking_url")
        arguments = {k: v for k, v in body.items() if k not in {"account_id", "marketplace"}}
        action = Action(
            id=next(self._action_ids),
            order_id=order_id,
            action_type=action_type,
            arguments=arguments,
            created_at=at,
            apply_at=at + self.action_delay,
        )
        self.actions[action.id] = action
        return action

    def apply_due_actions(self, at: datetime) -> int:
        applied = 0
        for action in self.actions.values():
            if action.processed or action.apply_at > at:
                continue
            order = self.orders[action.order_id]
            action.processed = True
            if action.action_type == "accept" and order.status == "waiting_acceptance":
                self.move(order.id, "waiting_shipment", at)
            elif action.action_type == "refuse" and order.status == "waiting_acceptance":
                self.move(order.id, "refused", at)
            elif action.action_type == "ship" and order.status == "waiting_shipment":
                carrier = action.arguments.get("carrier")
                if carrier == "Other":
                    carrier = action.arguments.get("carrier_name")
                self._add_tracking(
                    order,
                    str(carrier),
                    action.arguments.get("tracking_number"),
                    action.arguments.get("tracking_url"),
                    False,
                )
                self.move(order.id, "shipped", at)
            elif action.action_type == "refund" and order.status == "shipped":
                self.move(order.id, "refunding", at)
            else:
                action.state = "error"
                action.errors = [f"order is {order.status}: {action.action_type} not applied"]
                continue
            action.state = "success"
            applied += 1
        return applied


def now() -> datetime:
    return datetime.now(UTC)

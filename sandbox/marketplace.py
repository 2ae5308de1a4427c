"""A simulated ManoMano marketplace behind Lengow: orders, their lifecycle, and seller actions.

Plain Python, no I/O: the HTTP server (``sandbox.server``) exposes it the way Lengow does.
"""

from __future__ import annotations

import itertools
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

MARKETPLACE = "manomano_fr"

#: What the marketplace itself writes in an order's (and each line's) ``marketplace_status``
#: at each Lengow state, as the sandbox plays it. Not ``shared.contracts.MANOMANO_STATUS``,
#: ManoMano's name of a step as the pipeline shows it, where an accepted or canceled order
#: has none.
REPORTED_MARKETPLACE_STATUS = {
    "waiting_acceptance": "PENDING",
    "accepted": "PENDING",
    "waiting_shipment": "PREPARATION",
    "shipped": "SHIPPED",
    "refunding": "REFUNDING",
    "refused": "REFUSED",
    "refunded": "REFUNDED",
    "canceled": "CANCELLED",
}

#: Carrier codes and their labels. ManoMano's real codes are published nowhere we can read;
#: these differ from their labels on purpose, so that a client sending labels fails here as
#: it would at Lengow.
CARRIERS = {
    "colissimo": "Colissimo",
    "chronopost": "Chronopost",
    "dhl_express": "DHL Express",
    "dpd_predict": "DPD Predict",
    "gls_fr": "GLS",
    "tnt_express": "TNT Express",
    "ups_standard": "UPS",
    "fedex": "FedEx",
    "geodis": "Geodis",
    "db_schenker": "DB Schenker",
    "other": "Other",
}
REFUND_REASONS = {
    "product_unavailable": "Produit indisponible",
    "customer_cancellation": "Annulation par le client",
    "damaged_product": "Produit endommagé",
    "delivery_failure": "Échec de livraison",
    "other": "Autre motif",
}


def _list_argument(values: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "list",
        "depends_on": None,
        "valid_values": {code: {"label": label} for code, label in values.items()},
        "default_value": None,
        "accept_free_values": False,
    }


def _free_argument(kind: str) -> dict[str, Any]:
    return {
        "type": kind,
        "depends_on": None,
        "valid_values": {},
        "default_value": None,
        "accept_free_values": True,
    }


def _manomano(country: str) -> dict[str, Any]:
    return {
        "name": f"ManoMano {country}",
        "package": "manomano",
        "country": country,
        "features": {"invoice_upload": False},
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
                "accept": {
                    "status": ["waiting_acceptance"],
                    "args": [],
                    "optional_args": [],
                    "args_description": {},
                },
                "refuse": {
                    "status": ["waiting_acceptance"],
                    "args": [],
                    "optional_args": [],
                    "args_description": {},
                },
                "ship": {
                    "status": ["waiting_shipment"],
                    "args": ["carrier"],
                    "optional_args": [
                        "carrier_name",
                        "tracking_number",
                        "tracking_url",
                        "shipping_date",
                        "line",
                    ],
                    "args_description": {
                        "carrier": _list_argument(CARRIERS),
                        "carrier_name": _free_argument("string"),
                        "tracking_number": _free_argument("string"),
                        "tracking_url": _free_argument("string"),
                        "shipping_date": _free_argument("date"),
                        "line": _free_argument("string"),
                    },
                },
                "refund": {
                    "status": ["shipped"],
                    "args": ["refund_reason", "refund_shipping_fees"],
                    "optional_args": [],
                    "args_description": {
                        "refund_reason": _list_argument(REFUND_REASONS),
                        "refund_shipping_fees": _free_argument("boolean"),
                    },
                },
            },
            "carriers": {code: {"label": label} for code, label in CARRIERS.items()},
            "shipping_methods": {"standard": {"label": "Livraison standard"}},
        },
    }


#: The marketplace document Lengow serves (GET /v3.0/marketplaces), keyed by marketplace code.
MARKETPLACE_DOCUMENT: dict[str, Any] = {
    "manomano_fr": _manomano("FR"),
    "manomano_es": _manomano("ES"),
    "manomano_it": _manomano("IT"),
    "manomano_de": _manomano("DE"),
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
#: The voucher some orders use (the order's ``discount``).
VOUCHER = Decimal("5.00")
CENT = Decimal("0.01")


#: The fields of an action's body that name it rather than being its arguments.
ACTION_ENVELOPE = frozenset({"account_id", "marketplace", "marketplace_order_id", "action_type"})


class ActionRefused(Exception):  # noqa: N818 - Lengow's word for it
    """Lengow refuses the action as given (530, "logical error"); the message is its reason."""


class OrderNotFound(Exception):  # noqa: N818
    """No such order ({"detail": "Pas trouvé."})."""


@dataclass
class SimOrder:
    raw: dict[str, Any]
    fulfillment: bool
    shipped_lines: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return str(self.raw["marketplace_order_id"])

    @property
    def status(self) -> str:
        return str(self.raw["lengow_status"])

    @property
    def updated_at(self) -> datetime:
        return datetime.fromisoformat(self.raw["updated_at"])

    def lines(self) -> list[dict[str, Any]]:
        return [line for package in self.raw["packages"] for line in package["cart"]]

    def sort_key(self) -> tuple[str, str, str]:
        """Lengow's default order: marketplace, marketplace_order_date, imported_at."""
        return (
            self.raw["marketplace"],
            self.raw["marketplace_order_date"] or "",
            self.raw["imported_at"] or "",
        )


@dataclass
class Action:
    """An action as Lengow keeps it: flat arguments, ``queued`` then ``processed``, and
    ``errors`` a string (or null)."""

    id: int
    order_id: str
    marketplace: str
    account_id: int
    action_type: str
    arguments: dict[str, str]
    created_at: datetime
    #: Lengow sends it to the marketplace at this time (until then ``queued``).
    send_at: datetime
    #: The marketplace answers at this time.
    apply_at: datetime
    updated_at: datetime
    queued: bool = True
    processed: bool = False
    errors: str | None = None
    #: The marketplace refuses it with this reason when it answers.
    refusal: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            **self.arguments,
            "id": self.id,
            "marketplace_order_id": self.order_id,
            "account_id": self.account_id,
            "marketplace": self.marketplace,
            "action_type": self.action_type,
            "processed": self.processed,
            "queued": self.queued,
            "errors": self.errors,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def _ascii(name: str) -> str:
    """ "Léa" -> "lea": how French names usually appear in email addresses."""
    return unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()


def _money(value: Decimal) -> str:
    return str(value.quantize(CENT, rounding=ROUND_HALF_UP))


def truthy(value: Any) -> bool | None:
    """A boolean as a form or JSON body carries it."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


class Marketplace:
    """Orders of one seller on ManoMano, as Lengow sees them."""

    def __init__(
        self,
        *,
        seed: int = 7,
        action_delay: timedelta = timedelta(seconds=0),
        account_id: int = 1000,
        first_action_id: int = 1,
    ) -> None:
        """``first_action_id``: Lengow's action ids are unique for good; a sandbox that is
        started again against the same database must not give out the ids of an earlier run."""
        self.random = random.Random(seed)
        self.orders: dict[str, SimOrder] = {}
        self.actions: dict[int, Action] = {}
        self.action_delay = action_delay
        self.account_id = account_id
        #: PATCH /v3.0/orders/moi/ calls per order.
        self.moi_calls: Counter[str] = Counter()
        #: Reasons the marketplace gives, in turn, to the next actions it refuses.
        self.refusals: list[str] = []
        self._order_numbers = itertools.count(1)
        self._action_ids = itertools.count(first_action_id)
        # A poller pages through one query many times: the last answer is kept until an order
        # is created or moves, both through _set_status (a 100,000-order catch-up would
        # otherwise be quadratic here).
        self._revision = 0
        #: Orders life never moves (only actions do): the demo's, named in the README.
        self.left_alone: set[str] = set()
        self._last_query: tuple[tuple[Any, ...], list[SimOrder]] | None = None

    # --- Orders --------------------------------------------------------------------------

    def _address(
        self, first: str | None, last: str | None, kind: str, email: str | None
    ) -> dict[str, Any]:
        rng = self.random
        zipcode, city = rng.choice(CITIES)
        known = first is not None
        return {
            "id": rng.randint(10**6, 10**7),
            "type": kind,
            "civility": rng.choice(["MR", "MRS", None]),
            "first_name": first,
            "last_name": last,
            "full_name": f"{first} {last}" if known else None,
            "company": None,
            "first_line": f"{rng.randint(1, 120)} {rng.choice(STREETS)}" if known else None,
            "second_line": None,
            "complement": None,
            "zipcode": zipcode,
            "city": city,
            "state_region": None,
            "common_country_iso_a2": "FR",
            "email": email,
            "phone_home": None,
            "phone_office": None,
            "phone_mobile": f"06{rng.randint(10**7, 10**8 - 1)}" if known else None,
            "vat_number": None,
            "metas": None,
        }

    def _amount(self, value: Decimal) -> str | float:
        """Lengow gives money as a number or as a string, both in one answer."""
        return float(_money(value)) if self.random.random() < 0.5 else _money(value)

    def create_order(
        self,
        *,
        at: datetime,
        status: str = "waiting_acceptance",
        fulfillment: bool = False,
        missing_email: bool = False,
        order_id: str | None = None,
        anonymized: bool = False,
    ) -> SimOrder:
        rng = self.random
        number = next(self._order_numbers)
        order_id = order_id or f"M{at:%y%m%d}{number:07d}"
        first: str | None = rng.choice(FIRST_NAMES)
        last: str | None = rng.choice(LAST_NAMES)
        email = (
            None
            if missing_email
            else f"{_ascii(first or '')}.{_ascii(last or '')}.{number}@example.fr"
        )
        with_tax_detail = rng.random() < 0.8
        lines: list[dict[str, Any]] = []
        for index, (title, price) in enumerate(rng.sample(PRODUCTS, rng.randint(1, 3)), 1):
            quantity = rng.randint(1, 3)
            amount = price * quantity
            line_id = f"{order_id}-{index}"
            lines.append(
                {
                    "id": rng.randint(10**7, 10**8),
                    "marketplace_order_line_id": line_id,
                    "marketplace_product_id": f"MM{abs(hash(title)) % 10**8:08d}",
                    "merchant_product_id": {"field": "sku", "id": f"SKU-{index:03d}"},
                    "title": title,
                    "quantity": quantity,
                    # The line total including VAT; Lengow gives no unit price.
                    "amount": self._amount(amount),
                    # No tax detail reads as null or as "0.00": never a 0 % rate.
                    "tax": (
                        self._amount(amount - amount / (1 + VAT_RATE))
                        if with_tax_detail
                        else (None if number % 2 else "0.00")
                    ),
                    "discount": None,
                    "shipping": None,
                    "refunded_amount": None,
                    "lengow_status": None,
                    "marketplace_status": None,
                    "max_shipping_date": (at + timedelta(days=3)).isoformat(),
                    "orderline_types": [],
                }
            )
        shipping = (
            Decimal("0.00") if fulfillment else rng.choice([Decimal("0.00"), Decimal("9.90")])
        )
        total = sum((Decimal(_money(Decimal(str(line["amount"])))) for line in lines), Decimal(0))
        total += shipping
        # Some customers use a voucher: the order's discount, which total_order is net of.
        discount = VOUCHER if number % 9 == 4 and total > 3 * VOUCHER else Decimal(0)
        total -= discount
        if anonymized:  # Lengow removes personal data after 6 months
            first = last = email = None
        delivery = self._address(first, last, "delivery", email)

        def parcel(cart: list[dict[str, Any]]) -> dict[str, Any]:
            return {"delivery": {**delivery, "trackings": []}, "cart": cart}

        packages = [parcel(lines)]
        if len(lines) > 1 and rng.random() < 0.2:  # some orders go out in two parcels
            packages = [parcel(lines[:1]), parcel(lines[1:])]
        order_types = [{"type": "is_delivered_by_marketplace", "label": "Fulfilled by ManoMano"}]
        meta_key = "order_meta" if rng.random() < 0.5 else "meta"
        comment = rng.choice([None, None, "Livrer en semaine", ["Sonnez deux fois"]])
        raw: dict[str, Any] = {
            "marketplace": MARKETPLACE,
            "account_id": self.account_id,
            "marketplace_order_id": order_id,
            "marketplace_status": None,
            "lengow_status": None,
            # Some marketplaces give no order date.
            "marketplace_order_date": None if rng.random() < 0.05 else at.isoformat(),
            "marketplace_last_modified_date": at.isoformat(),
            "updated_at": at.isoformat(),
            "imported_at": at.isoformat(),
            "anonymized": anonymized,
            "merchant_order_id": None,
            "total_order": self._amount(total),
            "total_tax": (
                self._amount(total - total / (1 + VAT_RATE)) if with_tax_detail else None
            ),
            "shipping": self._amount(shipping),
            "discount": self._amount(discount),
            "processing_fee": None,
            "commission": self._amount(total * Decimal("0.15")),
            "currency": {"iso_a3": "EUR", "name": "Euro", "symbol": "€"},
            "original_currency": {"iso_a3": "EUR", "name": "Euro", "symbol": "€"},
            "original_total_order": self._amount(total),
            "comments": comment,
            "order_types": (order_types if fulfillment else []),
            meta_key: {"shipping_deadline": (at + timedelta(days=3)).isoformat()},
            "billing_address": self._address(first, last, "billing", email),
            "contact_address": self._address(first, last, "contact", email),
            "packages": packages,
        }
        order = SimOrder(raw, fulfillment)
        self.orders[order_id] = order
        self._set_status(order, "shipped" if fulfillment else status, at)
        if fulfillment:
            self._add_tracking(order, "geodis", f"GEO{number:09d}", None, True, None)
        return order

    def _set_status(self, order: SimOrder, status: str, at: datetime) -> None:
        if order.raw["lengow_status"] is not None and at <= order.updated_at:
            at = order.updated_at + timedelta(microseconds=1)
        order.raw["lengow_status"] = status
        order.raw["marketplace_status"] = REPORTED_MARKETPLACE_STATUS.get(status)
        if status == "refunded":  # Lengow keeps, per line, what was refunded so far
            for package in order.raw["packages"]:
                for line in package["cart"]:
                    line["refunded_amount"] = line["amount"]
        order.raw["updated_at"] = at.isoformat()
        self._revision += 1
        order.raw["marketplace_last_modified_date"] = at.isoformat()
        for line in order.lines():
            line["marketplace_status"] = REPORTED_MARKETPLACE_STATUS.get(status)
            line["lengow_status"] = status

    def _add_tracking(
        self,
        order: SimOrder,
        carrier: str,
        number: str | None,
        url: str | None,
        by_mp: bool,
        lines: list[str] | None,
    ) -> None:
        package = order.raw["packages"][0]
        if lines:
            package = next(
                (
                    p
                    for p in order.raw["packages"]
                    if any(line["marketplace_order_line_id"] in lines for line in p["cart"])
                ),
                package,
            )
        package["delivery"]["trackings"].append(
            {
                "number": number,
                "method": None,
                "carrier": carrier,
                "url": url,
                "relay": {"id": None, "name": None},
                "is_delivered_by_marketplace": by_mp,
                "parcel_weight": None,
                "shipped_at": now().isoformat(),
                "marketplace_order_line_ids": lines
                or [line["marketplace_order_line_id"] for line in package["cart"]],
            }
        )

    def _trackings(self, order: SimOrder) -> list[dict[str, Any]]:
        return [t for p in order.raw["packages"] for t in p["delivery"]["trackings"]]

    def move(self, order_id: str, status: str, at: datetime) -> SimOrder:
        """The marketplace moves an order on its own (customer, ManoMano, carrier)."""
        order = self.orders[order_id]
        if status == "shipped" and not self._trackings(order):
            self._add_tracking(
                order,
                "colissimo",
                f"6A{self.random.randint(10**10, 10**11)}",
                "https://www.laposte.fr/outils/suivre-vos-envois",
                False,
                None,
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
            if order.id in self.left_alone:
                continue
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
        not_imported: bool = False,
    ) -> list[SimOrder]:
        key = (
            self._revision,
            updated_from,
            updated_to,
            order_date_from,
            order_date_to,
            marketplace_order_id,
            lengow_status,
            not_imported,
        )
        if self._last_query is not None and self._last_query[0] == key:
            return self._last_query[1]
        found = []
        for order in self.orders.values():
            if updated_from and order.updated_at < updated_from:
                continue
            if updated_to and order.updated_at > updated_to:
                continue
            placed_at = order.raw["marketplace_order_date"]
            if order_date_from or order_date_to:
                if placed_at is None:
                    continue
                placed = datetime.fromisoformat(placed_at)
                if order_date_from and placed < order_date_from:
                    continue
                if order_date_to and placed > order_date_to:
                    continue
            if marketplace_order_id and order.id != marketplace_order_id:
                continue
            if lengow_status and order.status != lengow_status:
                continue
            if not_imported and order.raw["merchant_order_id"]:
                continue
            found.append(order)
        found.sort(key=SimOrder.sort_key)
        self._last_query = (key, found)
        return found

    def mark_imported(self, order_id: str, merchant_ids: list[str]) -> SimOrder:
        order = self.orders.get(order_id)
        if order is None:
            raise OrderNotFound(order_id)
        self.moi_calls[order_id] += 1
        order.raw["merchant_order_id"] = list(merchant_ids)
        return order

    # --- Seller actions ------------------------------------------------------------------

    def request_action(self, body: dict[str, Any], at: datetime) -> Action:
        """Check an action the way Lengow does (530 for bad input) and queue it; whether the
        order's status allows it is the marketplace's answer, later."""
        order_id = str(body.get("marketplace_order_id") or "")
        order = self.orders.get(order_id)
        if order is None:
            raise ActionRefused(f"order {order_id!r} not found on {MARKETPLACE}")
        action_type = str(body.get("action_type") or "")
        spec = MARKETPLACE_DOCUMENT[MARKETPLACE]["orders"]["actions"].get(action_type)
        if spec is None:
            raise ActionRefused(f"action {action_type!r} is not available on {MARKETPLACE}")
        known = ACTION_ENVELOPE | set(spec["args"]) | set(spec["optional_args"])
        unknown = sorted(set(body) - known)
        if unknown:
            raise ActionRefused(f"unknown arguments for {action_type}: {', '.join(unknown)}")
        missing = [arg for arg in spec["args"] if body.get(arg) in (None, "")]
        if missing:
            raise ActionRefused(f"missing mandatory arguments: {', '.join(missing)}")
        for arg, description in spec.get("args_description", {}).items():
            valid = description.get("valid_values")
            if valid and arg in body and str(body[arg]) not in valid:
                raise ActionRefused(
                    f"{arg} {body[arg]!r} is not one of the accepted values: {', '.join(valid)}"
                )
            if description.get("type") == "boolean" and arg in body and truthy(body[arg]) is None:
                raise ActionRefused(f"{arg} must be a boolean")
        if "line" in body:
            line = body["line"]
            line_ids = {line["marketplace_order_line_id"] for line in order.lines()}
            if not isinstance(line, str | int) or str(line) not in line_ids:
                raise ActionRefused(f"line must be one of the order's line ids, not {line!r}")
        if action_type == "ship" and body.get("carrier") == "other":
            if not (body.get("carrier_name") and body.get("tracking_url")):
                raise ActionRefused("carrier other needs carrier_name and tracking_url")
        elif body.get("carrier_name"):
            raise ActionRefused("carrier_name is only accepted with the carrier other")
        arguments = {k: str(v) for k, v in body.items() if k not in ACTION_ENVELOPE}
        action = Action(
            id=next(self._action_ids),
            order_id=order_id,
            marketplace=MARKETPLACE,
            account_id=self.account_id,
            action_type=action_type,
            arguments=arguments,
            created_at=at,
            send_at=at + self.action_delay / 2,
            apply_at=at + self.action_delay,
            updated_at=at,
            refusal=self.refusals.pop(0) if self.refusals else None,
        )
        self.actions[action.id] = action
        return action

    def apply_due_actions(self, at: datetime) -> int:
        """Lengow sends queued actions on; the marketplace answers those that are due."""
        applied = 0
        for action in self.actions.values():
            if action.queued and action.send_at <= at:
                action.queued = False
                action.updated_at = at
            if action.queued or action.processed or action.errors or action.apply_at > at:
                continue
            action.updated_at = at
            reason = action.refusal or self._apply(action, at)
            if reason is not None:
                action.errors = reason  # processed stays false: the marketplace refused it
                continue
            action.processed = True
            applied += 1
        return applied

    def _apply(self, action: Action, at: datetime) -> str | None:
        """Carry the action out; the marketplace's reason when it cannot."""
        order = self.orders[action.order_id]
        kind, status = action.action_type, order.status
        if kind == "accept" and status == "waiting_acceptance":
            self.move(order.id, "waiting_shipment", at)
        elif kind == "refuse" and status == "waiting_acceptance":
            self.move(order.id, "refused", at)
        elif kind == "ship" and status == "waiting_shipment":
            self._ship(order, action, at)
        elif kind == "refund" and status == "shipped":
            self.move(order.id, "refunding", at)
        else:
            shown = REPORTED_MARKETPLACE_STATUS.get(status, status)
            return f"Order {order.id} is {shown}: {kind} refused"
        return None

    def _ship(self, order: SimOrder, action: Action, at: datetime) -> None:
        arguments = action.arguments
        carrier = arguments.get("carrier")
        if carrier == "other":
            carrier = arguments.get("carrier_name")
        line = arguments.get("line")
        self._add_tracking(
            order,
            str(carrier),
            arguments.get("tracking_number"),
            arguments.get("tracking_url"),
            False,
            [line] if line else None,
        )
        if line:
            order.shipped_lines.add(line)
            all_lines = {item["marketplace_order_line_id"] for item in order.lines()}
            if order.shipped_lines < all_lines:
                self._set_status(order, "waiting_shipment", at)  # partly shipped
                return
        self.move(order.id, "shipped", at)


def now() -> datetime:
    return datetime.now(UTC)

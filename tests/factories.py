"""Realistic ManoMano orders and envelopes, as the poller would publish them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.notifier.invoice import Seller

BASE_TIME = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
#: The order most tests use.
ORDER = "M250112345678"
#: The seller of the invoice tests.
SELLER = Seller(
    legal_name="Outils Martin SAS",
    address=("12 avenue de la République", "69003 Lyon", "France"),
    siren="123456789",
    siret="12345678900012",
    vat_number="FR12123456789",
)


def order_snapshot(
    order_id: str = ORDER,
    status: str = "waiting_acceptance",
    *,
    minutes: int = 0,
    fulfillment: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """The ``order.changed`` payload of a two-line ManoMano order."""
    manomano = {
        "waiting_acceptance": "PENDING",
        "waiting_shipment": "PREPARATION",
        "shipped": "SHIPPED",
        "refunded": "REFUNDED",
        "refused": "REFUSED",
    }.get(status)
    shipped = status in {"shipped", "closed", "refunding", "refunded"}
    data: dict[str, Any] = {
        "marketplace": "manomano_fr",
        "marketplace_order_id": order_id,
        "lengow_status": status,
        "marketplace_status": manomano,
        "updated_at": (BASE_TIME + timedelta(minutes=minutes)).isoformat(),
        "marketplace_order_date": BASE_TIME.isoformat(),
        "total_order": "159.80",
        "total_tax": "26.63",
        "shipping": "9.90",
        "currency": "EUR",
        "is_delivered_by_marketplace": fulfillment,
        "order_types": {"is_express": False, "is_business": False},
        "billing_address": {
            "email": "camille.martin@example.fr",
            "first_name": "Camille",
            "last_name": "Martin",
            "full_name": "Camille Martin",
            "first_line": "12 rue des Lilas",
            "zipcode": "69003",
            "city": "Lyon",
            "common_country_iso_a2": "FR",
            "phone_mobile": "",
        },
        "packages": [
            {
                "delivery": {
                    "full_name": "Camille Martin",
                    "first_line": "12 rue des Lilas",
                    "zipcode": "69003",
                    "city": "Lyon",
                    "common_country_iso_a2": "FR",
                    "trackings": (
                        [
                            {
                                "carrier": "Colissimo",
                                "number": "6A12345678901",
                                "url": "https://www.laposte.fr/outils/suivre-vos-envois",
                            }
                        ]
                        if shipped
                        else []
                    ),
                },
                "cart": [
                    {
                        "marketplace_order_line_id": f"{order_id}-1",
                        "title": "Perceuse visseuse sans fil 18V",
                        "quantity": 1,
                        "amount": "129.90",
                        "price_unit": "129.90",
                        "tax": "21.65",
                        "marketplace_status": manomano,
                    },
                    {
                        "marketplace_order_line_id": f"{order_id}-2",
                        "title": "Coffret de 10 forets béton",
                        "quantity": 2,
                        "amount": "20.00",
                        "price_unit": "10.00",
                        "tax": "3.33",
                        "marketplace_status": manomano,
                    },
                ],
            }
        ],
    }
    data.update(overrides)
    return data


def envelope(
    data: dict[str, Any],
    type_: str = "order.changed",
    *,
    message_id: str | None = None,
    source: str = "poller",
) -> dict[str, Any]:
    return {
        "id": message_id or str(uuid.uuid4()),
        "type": type_,
        "source": source,
        "time": datetime.now(UTC).isoformat(),
        "correlation_id": str(uuid.uuid4()),
        "data": data,
    }


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def order_shipped(
    order_id: str = ORDER,
    *,
    email: str | None = "camille.martin@example.fr",
    fulfillment: bool = False,
    name: str = "Camille Martin",
) -> dict[str, Any]:
    """The ``order.shipped`` payload the processor emits for :func:`order_snapshot`."""
    snapshot = order_snapshot(order_id, "shipped", fulfillment=fulfillment)
    billing = {**snapshot["billing_address"], "email": email, "full_name": name}
    package = snapshot["packages"][0]
    tracking = package["delivery"]["trackings"][0]
    return {
        "marketplace": snapshot["marketplace"],
        "marketplace_order_id": order_id,
        "marketplace_order_date": snapshot["marketplace_order_date"],
        "shipped_at": snapshot["updated_at"],
        "currency": "EUR",
        "billing_address": billing,
        "lines": package["cart"],
        "total_order": snapshot["total_order"],
        "total_tax": snapshot["total_tax"],
        "shipping": snapshot["shipping"],
        "carrier": tracking["carrier"],
        "tracking_number": tracking["number"],
        "tracking_url": tracking["url"],
        "is_delivered_by_marketplace": fulfillment,
    }


def order_refunded(status: str, minute: int, **amounts: str) -> dict[str, Any]:
    """``order.refunded`` for :func:`order_shipped`'s order, refunded at ``minute``;
    ``amounts``: the refunded amount by line id."""
    data = order_shipped()
    data["lines"] = [
        {**line, "refunded_amount": amounts.get(line["marketplace_order_line_id"])}
        for line in data["lines"]
    ]
    data["refund_status"] = status
    data["refunded_at"] = f"2026-12-01T10:{minute:02d}:00+00:00"
    return data

"""The invoice: numbering and amounts, from an ``order.shipped`` event. Pure, no I/O.

Lengow gives amounts including VAT (``amount``, ``price_unit``, ``shipping``) and each line's
VAT amount (``tax``); the invoice shows them excluding VAT, with the rate, as French B2C
invoices must.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal

from shared.contracts import Address, CartLine, OrderShipped

CENT = Decimal("0.01")
#: VAT rates in force in France; a rate computed from Lengow's amounts snaps to the nearest.
FRENCH_VAT_RATES = (Decimal("20"), Decimal("10"), Decimal("5.5"), Decimal("2.1"), Decimal("0"))
DEFAULT_VAT_RATE = Decimal("20")


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Seller:
    legal_name: str
    address: tuple[str, ...]
    siren: str
    siret: str
    vat_number: str
    email: str | None = None
    legal_form: str | None = None
    share_capital: str | None = None
    rcs: str | None = None


@dataclass(frozen=True)
class InvoiceLine:
    title: str
    quantity: int
    unit_price_excl: Decimal
    vat_rate: Decimal
    total_excl: Decimal
    vat: Decimal
    total_incl: Decimal


@dataclass(frozen=True)
class Customer:
    name: str
    company: str | None
    address: tuple[str, ...]
    email: str | None


@dataclass(frozen=True)
class Invoice:
    number: str
    issued_on: date
    seller: Seller
    marketplace: str
    order_id: str
    order_date: datetime | None
    customer: Customer
    lines: tuple[InvoiceLine, ...]
    currency: str
    carrier: str | None
    tracking_number: str | None

    @property
    def total_excl(self) -> Decimal:
        return sum((line.total_excl for line in self.lines), Decimal("0.00"))

    @property
    def total_vat(self) -> Decimal:
        return sum((line.vat for line in self.lines), Decimal("0.00"))

    @property
    def total_incl(self) -> Decimal:
        return sum((line.total_incl for line in self.lines), Decimal("0.00"))

    def vat_breakdown(self) -> list[tuple[Decimal, Decimal, Decimal]]:
        """(rate, base excluding VAT, VAT) for each rate on the invoice."""
        rates: dict[Decimal, tuple[Decimal, Decimal]] = {}
        for line in self.lines:
            base, vat = rates.get(line.vat_rate, (Decimal("0.00"), Decimal("0.00")))
            rates[line.vat_rate] = (base + line.total_excl, vat + line.vat)
        return [(rate, base, vat) for rate, (base, vat) in sorted(rates.items(), reverse=True)]


def invoice_number(prefix: str, year: int, sequence: int) -> str:
    """``FA2026-000042``: the prefix, the year, then the gapless sequence of that year."""
    return f"{prefix}{year}-{sequence:06d}"


def snap_rate(rate: Decimal) -> Decimal:
    return min(FRENCH_VAT_RATES, key=lambda known: abs(known - rate))


def _line(title: str, quantity: int, total_incl: Decimal, vat_rate: Decimal) -> InvoiceLine:
    total_incl = money(total_incl)
    total_excl = money(total_incl / (1 + vat_rate / 100))
    quantity = max(quantity, 1)
    return InvoiceLine(
        title=title,
        quantity=quantity,
        unit_price_excl=money(total_excl / quantity),
        vat_rate=vat_rate,
        total_excl=total_excl,
        vat=total_incl - total_excl,
        total_incl=total_incl,
    )


def cart_line(line: CartLine) -> InvoiceLine:
    quantity = max(line.quantity, 1)
    total_incl = line.amount
    if total_incl is None:
        total_incl = (line.price_unit or Decimal(0)) * quantity
    rate = DEFAULT_VAT_RATE
    if line.tax is not None and total_incl > line.tax > 0:
        rate = snap_rate(line.tax / (total_incl - line.tax) * 100)
    elif line.tax == 0:
        rate = Decimal("0")
    return _line(line.title or "Article", quantity, total_incl, rate)


def _address_lines(address: Address | None) -> tuple[str, ...]:
    if address is None:
        return ()
    street = [address.first_line, address.second_line, address.complement]
    city = " ".join(part for part in (address.zipcode, address.city) if part)
    lines = [*street, city, address.common_country_iso_a2]
    return tuple(_one_line(line) for line in lines if line and line.strip())


def _one_line(text: str) -> str:
    """Customer data is printed on one line each, whatever line breaks it came with."""
    return " ".join(text.split())


def customer_of(address: Address | None) -> Customer:
    if address is None:
        return Customer(name="", company=None, address=(), email=None)
    name = address.full_name or " ".join(
        part for part in (address.first_name, address.last_name) if part
    )
    return Customer(
        name=_one_line(name),
        company=_one_line(address.company) if address.company else None,
        address=_address_lines(address),
        email=address.email.strip() if address.email else None,
    )


def build_invoice(
    shipment: OrderShipped,
    *,
    seller: Seller,
    number: str,
    issued_on: date,
    shipping_label: str,
) -> Invoice:
    lines = [cart_line(line) for line in shipment.lines]
    shipping = shipment.shipping or Decimal(0)
    if shipping > 0:
        # Shipping follows the VAT rate of the goods it carries (the highest on the order).
        rate = max((line.vat_rate for line in lines), default=DEFAULT_VAT_RATE)
        lines.append(_line(shipping_label, 1, shipping, rate))
    return Invoice(
        number=number,
        issued_on=issued_on,
        seller=seller,
        marketplace=shipment.marketplace,
        order_id=shipment.marketplace_order_id,
        order_date=shipment.marketplace_order_date,
        customer=customer_of(shipment.billing_address),
        lines=tuple(lines),
        currency=shipment.currency or "EUR",
        carrier=shipment.carrier,
        tracking_number=shipment.tracking_number,
    )

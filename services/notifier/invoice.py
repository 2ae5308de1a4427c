"""The invoice: numbering and amounts, from an ``order.shipped`` event. Pure, no I/O.

Lengow gives amounts including VAT (each line's ``amount``, ``shipping``, ``processing_fee``,
the order's ``discount`` and ``total_order``); the invoice shows them excluding VAT, with the
rate (``taxes.py`` decides it), as French invoices must. Its total including VAT is what the
customer paid, ``total_order``, to the cent: when the parts Lengow gives cannot be reconciled
with it, the invoice is held (:class:`InvoiceHeldError`), never issued wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from enum import StrEnum

from services.notifier.labels import LABELS, Language, language_for
from services.notifier.taxes import (
    CENT,
    InvoiceHeldError,
    Regime,
    Treatment,
    VatPolicy,
    line_rate,
    treatment,
)
from shared.contracts import Address, CartLine, OrderShipped

ZERO = Decimal("0.00")
#: Lengow's ``total_order`` when it had no exchange rate for the order's currency.
NO_EXCHANGE_RATE = Decimal("-1")


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


class DocumentKind(StrEnum):
    INVOICE = "invoice"
    #: A *facture d'avoir*: once an invoice exists, only a credit note corrects it.
    CREDIT_NOTE = "credit_note"


class LineKind(StrEnum):
    GOODS = "goods"
    SHIPPING = "shipping"
    FEE = "fee"
    DISCOUNT = "discount"


@dataclass(frozen=True)
class InvoiceLine:
    title: str
    quantity: int
    #: As precise as needed for ``quantity`` times it to give ``total_excl`` to the cent.
    unit_price_excl: Decimal
    vat_rate: Decimal
    total_excl: Decimal
    vat: Decimal
    total_incl: Decimal
    kind: LineKind = LineKind.GOODS
    #: Which part of the order the line is (a cart line's id, ``shipping``...): a credit note
    #: credits the invoice's lines by it.
    key: str = ""

    def to_json(self) -> dict[str, str | int]:
        return {
            "title": self.title,
            "quantity": self.quantity,
            "unit_price_excl": str(self.unit_price_excl),
            "vat_rate": str(self.vat_rate),
            "total_excl": str(self.total_excl),
            "vat": str(self.vat),
            "total_incl": str(self.total_incl),
            "kind": self.kind.value,
            "key": self.key,
        }

    @classmethod
    def from_json(cls, data: dict[str, str | int]) -> InvoiceLine:
        def amount(name: str) -> Decimal:
            return Decimal(str(data[name]))

        return cls(
            title=str(data["title"]),
            quantity=int(data["quantity"]),
            unit_price_excl=amount("unit_price_excl"),
            vat_rate=amount("vat_rate"),
            total_excl=amount("total_excl"),
            vat=amount("vat"),
            total_incl=amount("total_incl"),
            kind=LineKind(str(data["kind"])),
            key=str(data["key"]),
        )


@dataclass(frozen=True)
class LineTitles:
    """The titles of the lines that are not goods, in the invoice's language."""

    shipping: str
    fee: str
    discount: str

    @classmethod
    def written_in(cls, language: Language) -> LineTitles:
        labels = LABELS[language]
        return cls(labels["shipping"], labels["fee"], labels["discount"])


@dataclass(frozen=True)
class Customer:
    name: str
    company: str | None
    address: tuple[str, ...]
    email: str | None
    #: The billing country (ISO 3166 alpha-2), which decides the documents' language.
    country: str | None = None
    #: A business buyer's VAT number, printed under its company.
    vat_number: str | None = None


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
    treatment: Treatment = field(default=Treatment(Regime.DOMESTIC, "FR"))
    kind: DocumentKind = DocumentKind.INVOICE
    #: A credit note's invoice number.
    refers_to: str | None = None
    language: Language = "fr"
    #: Where the goods went (ISO 3166 alpha-2): an exempt supply's e-invoice must say it.
    delivery_country: str | None = None

    @property
    def total_excl(self) -> Decimal:
        return sum((line.total_excl for line in self.lines), ZERO)

    @property
    def total_vat(self) -> Decimal:
        return sum((line.vat for line in self.lines), ZERO)

    @property
    def total_incl(self) -> Decimal:
        return sum((line.total_incl for line in self.lines), ZERO)

    def vat_breakdown(self) -> list[tuple[Decimal, Decimal, Decimal]]:
        """(rate, base excluding VAT, VAT) for each rate: the sums of the lines at that rate."""
        rates: dict[Decimal, tuple[Decimal, Decimal]] = {}
        for line in self.lines:
            base, vat = rates.get(line.vat_rate, (ZERO, ZERO))
            rates[line.vat_rate] = (base + line.total_excl, vat + line.vat)
        return [(rate, base, vat) for rate, (base, vat) in sorted(rates.items(), reverse=True)]


def invoice_number(prefix: str, year: int, sequence: int) -> str:
    """``FA2026-000042``: the prefix, the year, then the gapless sequence of that year."""
    return f"{prefix}{year}-{sequence:06d}"


def unit_price(total_excl: Decimal, quantity: int) -> Decimal:
    """The unit price to print: the fewest decimals (two at least) with which the quantity
    times the printed price gives the line's total, so that every printed line adds up."""
    for places in range(2, 10):
        unit = (total_excl / quantity).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)
        if money(unit * quantity) == total_excl:
            return unit
    return unit


def priced_line(
    title: str,
    quantity: int,
    total_incl: Decimal,
    vat_rate: Decimal,
    kind: LineKind,
    key: str = "",
) -> InvoiceLine:
    total_incl = money(total_incl)
    total_excl = money(total_incl / (1 + vat_rate / 100))
    quantity = max(quantity, 1)
    return InvoiceLine(
        title=title,
        quantity=quantity,
        unit_price_excl=unit_price(total_excl, quantity),
        vat_rate=vat_rate,
        total_excl=total_excl,
        vat=total_incl - total_excl,
        total_incl=total_incl,
        kind=kind,
        key=key or kind.value,
    )


def _product_ids(line: CartLine) -> tuple[str, ...]:
    merchant = (line.merchant_product_id or {}).get("id")
    return tuple(str(i) for i in (merchant, line.marketplace_product_id) if i)


def line_key(line: CartLine, index: int) -> str:
    return line.marketplace_order_line_id or f"line-{index}"


def goods_line(line: CartLine, key: str, taxed: Treatment, policy: VatPolicy) -> InvoiceLine:
    quantity = max(line.quantity, 1)
    title = line.title or "Article"
    total_incl = line.amount
    if total_incl is None and line.price_unit is not None:  # not Lengow's: older events
        total_incl = line.price_unit * quantity
    if total_incl is None:
        raise InvoiceHeldError(f"Lengow gives no amount for {title!r}")
    rate = line_rate(
        title=title,
        total_incl=total_incl,
        tax=line.tax,
        quantity=quantity,
        product_ids=_product_ids(line),
        taxed=taxed,
        policy=policy,
    )
    return priced_line(title, quantity, total_incl, rate, LineKind.GOODS, key)


def _destination(shipment: OrderShipped) -> Address | None:
    """Where the goods go: the delivery address, else the billing one."""
    delivery = shipment.delivery_address
    return delivery if delivery and delivery.common_country_iso_a2 else shipment.billing_address


def document_language(order: OrderShipped, forced: Language | None = None) -> Language:
    billing = order.billing_address
    return language_for(billing.common_country_iso_a2 if billing else None, forced)


def sale_treatment(shipment: OrderShipped, policy: VatPolicy) -> Treatment:
    """Where the goods go decides the VAT."""
    place = _destination(shipment)
    return treatment(
        place.common_country_iso_a2 if place else None,
        place.zipcode if place else None,
        buyer_vat_number(shipment),
        policy,
    )


def buyer_vat_number(order: OrderShipped) -> str | None:
    """A business buyer's VAT number, as Lengow gives it on the billing or delivery address."""
    billing, delivery = order.billing_address, order.delivery_address
    number = (billing.vat_number if billing else None) or (
        delivery.vat_number if delivery else None
    )
    return "".join(number.split()) if number and number.strip() else None


def _shipping(shipment: OrderShipped) -> Decimal:
    if shipment.shipping is not None:
        return shipment.shipping
    return sum((line.shipping for line in shipment.lines if line.shipping is not None), ZERO)


def paid_total(shipment: OrderShipped) -> Decimal:
    total = shipment.total_order
    if total is None:
        raise InvoiceHeldError("Lengow gives no total_order: what the customer paid is unknown")
    if total == NO_EXCHANGE_RATE:
        raise InvoiceHeldError(
            "Lengow's total_order is -1 (no exchange rate for the order's currency)"
        )
    return money(total)


def reconciled_discount(shipment: OrderShipped, charged: Decimal, paid: Decimal) -> Decimal:
    """The discount that makes the parts add up to what was paid; Lengow does not say
    whether line amounts are before their own discounts, so both readings are tried, and
    none other. A discount is never a surcharge, whatever its sign in Lengow's data."""
    order_discount = abs(shipment.discount or ZERO)
    line_discounts = sum((abs(line.discount or ZERO) for line in shipment.lines), ZERO)
    for discount in dict.fromkeys((order_discount, order_discount + line_discounts, ZERO)):
        if money(charged - discount) == paid:
            return money(discount)
    raise InvoiceHeldError(
        f"the parts do not add up to what the customer paid: lines, shipping and fees"
        f" {money(charged)}, order discount {money(order_discount)}, line discounts"
        f" {money(line_discounts)}; Lengow's total_order is {paid}"
    )


def discount_lines(discount: Decimal, charged: list[InvoiceLine], title: str) -> list[InvoiceLine]:
    """The discount lowers each rate's base in proportion to what was charged at that rate
    (the cents shared by largest remainder, so the parts sum to the discount)."""
    if discount == 0:
        return []
    per_rate: dict[Decimal, Decimal] = {}
    for line in charged:
        per_rate[line.vat_rate] = per_rate.get(line.vat_rate, ZERO) + line.total_incl
    whole = sum(per_rate.values(), ZERO)
    exact = {rate: discount * amount / whole for rate, amount in per_rate.items()}
    parts = {rate: value.quantize(CENT, rounding=ROUND_DOWN) for rate, value in exact.items()}
    left = int((discount - sum(parts.values(), ZERO)) / CENT)
    for rate in sorted(exact, key=lambda r: exact[r] - parts[r], reverse=True)[:left]:
        parts[rate] += CENT
    return [
        priced_line(title, 1, -part, rate, LineKind.DISCOUNT, f"discount-{rate}")
        for rate, part in sorted(parts.items(), reverse=True)
        if part
    ]


def invoice_lines(
    shipment: OrderShipped, taxed: Treatment, policy: VatPolicy, titles: LineTitles
) -> tuple[InvoiceLine, ...]:
    """The invoice's lines, whose total including VAT is what the customer paid."""
    paid = paid_total(shipment)
    lines = [
        goods_line(line, line_key(line, index), taxed, policy)
        for index, line in enumerate(shipment.lines)
    ]
    # Shipping and fees follow the VAT rate of the goods (the highest on the order).
    rate = max((line.vat_rate for line in lines), default=Decimal("0"))
    for title, amount, kind in (
        (titles.shipping, _shipping(shipment), LineKind.SHIPPING),
        (titles.fee, shipment.processing_fee or ZERO, LineKind.FEE),
    ):
        if amount > 0:
            lines.append(priced_line(title, 1, amount, rate, kind))
    charged = sum((line.total_incl for line in lines), ZERO)
    discount = reconciled_discount(shipment, charged, paid)
    return (*lines, *discount_lines(discount, lines, titles.discount))


def build_invoice(
    shipment: OrderShipped,
    *,
    seller: Seller,
    number: str,
    issued_on: date,
    policy: VatPolicy | None = None,
    language: Language | None = None,
) -> Invoice:
    """The invoice of ``shipment``, in ``language`` or its customer's; raises
    :class:`InvoiceHeldError` when it cannot be right."""
    policy = policy or VatPolicy()
    language = document_language(shipment, language)
    taxed = sale_treatment(shipment, policy)
    lines = invoice_lines(shipment, taxed, policy, LineTitles.written_in(language))
    return document_of(
        shipment,
        seller=seller,
        number=number,
        issued_on=issued_on,
        lines=lines,
        policy=policy,
        language=language,
    )


def document_of(
    order: OrderShipped,
    *,
    seller: Seller,
    number: str,
    issued_on: date,
    lines: tuple[InvoiceLine, ...],
    kind: DocumentKind = DocumentKind.INVOICE,
    refers_to: str | None = None,
    policy: VatPolicy | None = None,
    language: Language | None = None,
) -> Invoice:
    """The document of ``order`` with these lines: an invoice, or a credit note of it."""
    destination = _destination(order)
    return Invoice(
        number=number,
        issued_on=issued_on,
        seller=seller,
        marketplace=order.marketplace,
        order_id=order.marketplace_order_id,
        order_date=order.marketplace_order_date,
        customer=customer_of(order.billing_address, buyer_vat_number(order)),
        lines=lines,
        currency=order.currency or "EUR",
        carrier=order.carrier,
        tracking_number=order.tracking_number,
        treatment=sale_treatment(order, policy or VatPolicy()),
        kind=kind,
        refers_to=refers_to,
        language=document_language(order, language),
        delivery_country=destination.common_country_iso_a2 if destination else None,
    )


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


def customer_of(address: Address | None, vat_number: str | None = None) -> Customer:
    if address is None:
        return Customer(name="", company=None, address=(), email=None, vat_number=vat_number)
    name = address.full_name or " ".join(
        part for part in (address.first_name, address.last_name) if part
    )
    return Customer(
        name=_one_line(name),
        company=_one_line(address.company) if address.company else None,
        address=_address_lines(address),
        email=address.email.strip() if address.email else None,
        country=address.common_country_iso_a2,
        vat_number=vat_number,
    )

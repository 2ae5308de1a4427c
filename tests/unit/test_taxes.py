"""VAT and totals on the invoice, with order data in Lengow's shapes (../shared/lengow-api.md)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.notifier.invoice import (
    Invoice,
    LineKind,
    build_invoice,
    money,
)
from services.notifier.labels import Language
from services.notifier.rendering import InvoiceRenderer
from services.notifier.settings import NotifierSettings
from services.notifier.taxes import (
    VAT_RATES,
    InvoiceHeldError,
    Regime,
    VatPolicy,
    rate_from_tax,
    treatment,
    vat_of,
)
from shared.contracts import OrderShipped
from tests.factories import order_shipped
from tests.unit.test_invoice import SELLER

D = Decimal


def shipment(
    lines: list[dict[str, Any]],
    *,
    shipping: str | None = "0.00",
    total: str | None = None,
    country: str = "FR",
    vat_number: str | None = None,
    **order: Any,
) -> OrderShipped:
    data = order_shipped()
    data["lines"] = [
        {"title": f"Article {i}", "quantity": 1, **line} for i, line in enumerate(lines)
    ]
    data["shipping"] = shipping
    data["billing_address"] = {
        **data["billing_address"],
        "common_country_iso_a2": country,
        "vat_number": vat_number,
    }
    if total is None:
        amounts = sum(D(str(line["amount"])) for line in lines) + D(shipping or "0")
        total = str(amounts - D(str(order.get("discount") or 0)))
    data["total_order"] = total
    data.update(order)
    return OrderShipped.model_validate(data)


def invoice_of(
    sale: OrderShipped, policy: VatPolicy | None = None, language: Language | None = None
) -> Invoice:
    return build_invoice(
        sale,
        seller=SELLER,
        number="FA2026-000001",
        issued_on=date(2026, 12, 1),
        policy=policy,
        language=language,
    )


def rates_of(invoice: Invoice) -> list[Decimal]:
    return [line.vat_rate for line in invoice.lines]


# --- The table ----------------------------------------------------------------------------


def test_the_rates_in_force_in_the_countries_manomano_sells_to() -> None:
    assert {country: rates.in_force for country, rates in VAT_RATES.items()} == {
        "FR": (D("20"), D("10"), D("5.5"), D("2.1")),
        "ES": (D("21"), D("10"), D("4")),
        "IT": (D("22"), D("10"), D("5"), D("4")),
        "DE": (D("19"), D("7")),
    }


# --- Where the rate comes from ------------------------------------------------------------


@pytest.mark.parametrize("tax", [None, "0.00", "0"])
def test_no_tax_detail_is_not_a_zero_rate(tax: str | None) -> None:
    invoice = invoice_of(shipment([{"amount": "120.00", "tax": tax}]))
    assert rates_of(invoice) == [D("20")]
    assert invoice.total_vat == D("20.00")


@pytest.mark.parametrize(
    ("amount", "tax", "quantity", "rate"),
    [
        ("120.00", "20.00", 1, "20"),
        ("120.00", "19.99", 1, "20"),  # Lengow rounded its own way: a cent off
        ("105.50", "5.50", 1, "5.5"),
        ("110.00", "10.00", 1, "10"),
        ("30.00", "5.01", 3, "20"),  # each unit's VAT rounded: a cent per unit
    ],
)
def test_a_consistent_line_tax_gives_the_rate(
    amount: str, tax: str, quantity: int, rate: str
) -> None:
    assert rate_from_tax(D(amount), D(tax), quantity, VAT_RATES["FR"]) == D(rate)


def test_a_tax_matching_no_rate_in_force_falls_back_to_the_settings() -> None:
    # 15 % is no French rate: the product's setting (or the default) decides, never a snap.
    assert rate_from_tax(D("115.00"), D("15.00"), 1, VAT_RATES["FR"]) is None
    sale = shipment([{"amount": "115.00", "tax": "15.00", "merchant_product_id": {"id": "GRN-1"}}])
    policy = VatPolicy(product_rates={"GRN-1": {"FR": D("5.5")}})
    assert rates_of(invoice_of(sale, policy)) == [D("5.5")]


def test_per_product_rates_by_the_sellers_or_manomanos_id() -> None:
    policy = VatPolicy(product_rates={"SKU-BOOK": {"FR": D("5.5")}, "MM123": {"FR": D("10")}})
    sale = shipment(
        [
            {
                "amount": "21.10",
                "tax": None,
                "merchant_product_id": {"field": "sku", "id": "SKU-BOOK"},
            },
            {"amount": "11.00", "tax": "0.00", "marketplace_product_id": "MM123"},
            {"amount": "12.00", "tax": None, "merchant_product_id": {"id": "OTHER"}},
        ]
    )
    assert rates_of(invoice_of(sale, policy)) == [D("5.5"), D("10"), D("20")]


def test_a_french_default_rate_and_no_default_at_all() -> None:
    sale = shipment([{"amount": "105.50", "tax": None}])
    assert rates_of(invoice_of(sale, VatPolicy(default_rate=D("5.5")))) == [D("5.5")]
    with pytest.raises(InvoiceHeldError, match="no VAT rate for 'Article 0'"):
        invoice_of(sale, VatPolicy(default_rate=None))


def test_settings_are_checked_against_the_table() -> None:
    assert NotifierSettings(vat_product_rates={"A": D("5.5"), "B": {"ES": D("10")}}).vat_policy()
    with pytest.raises(ValueError, match="5 % for A is not a rate in force in FR"):
        NotifierSettings(vat_product_rates={"A": D("5")})
    with pytest.raises(ValueError, match="VAT_DEFAULT_RATE"):
        NotifierSettings(vat_default_rate="19.6")
    assert NotifierSettings(vat_default_rate="none").vat_policy().default_rate is None


# --- Other countries ----------------------------------------------------------------------


def test_spain_under_the_one_stop_shop_keeps_21_percent() -> None:
    sale = shipment([{"amount": "121.00", "tax": "21.00"}], country="ES")
    invoice = invoice_of(sale, VatPolicy(one_stop_shop=True))
    assert invoice.treatment.regime is Regime.OSS
    assert rates_of(invoice) == [D("21")]
    assert invoice.total_vat == D("21.00")


def test_without_the_one_stop_shop_an_eu_consumer_pays_french_vat() -> None:
    sale = shipment([{"amount": "120.00", "tax": None}], country="IT")
    invoice = invoice_of(sale)
    assert invoice.treatment.regime is Regime.DOMESTIC
    assert rates_of(invoice) == [D("20")]


def test_one_stop_shop_defaults_to_the_destinations_standard_rate() -> None:
    sale = shipment([{"amount": "119.00", "tax": None}], country="DE")
    assert rates_of(invoice_of(sale, VatPolicy(one_stop_shop=True))) == [D("19")]
    # A French default rate says nothing of Germany's rates: held, not guessed.
    with pytest.raises(InvoiceHeldError, match="in DE"):
        invoice_of(sale, VatPolicy(one_stop_shop=True, default_rate=D("5.5")))


def test_delivery_address_decides_over_the_billing_one() -> None:
    sale = shipment([{"amount": "121.00", "tax": "21.00"}], country="FR")
    delivered = sale.model_copy(
        update={
            "delivery_address": sale.billing_address.model_copy(  # type: ignore[union-attr]
                update={"common_country_iso_a2": "ES"}
            )
        }
    )
    assert invoice_of(delivered, VatPolicy(one_stop_shop=True)).treatment.rate_country == "ES"


# --- Exempt sales and their mentions ------------------------------------------------------


def test_intra_eu_business_buyer_is_exempt_with_the_mention() -> None:
    sale = shipment([{"amount": "100.00", "tax": "0.00"}], country="DE", vat_number="DE 123456789")
    invoice = invoice_of(sale, language="fr")
    assert invoice.treatment.regime is Regime.INTRA_EU_SUPPLY
    assert rates_of(invoice) == [D("0")]
    assert invoice.total_vat == D("0.00") and invoice.total_incl == D("100.00")
    mentions = InvoiceRenderer().legal_mentions(invoice)
    assert "article 262 ter I du CGI" in mentions[0] and "Autoliquidation" in mentions[0]
    assert mentions[1].endswith("DE123456789")
    # The German customer's own invoice says it in German, citing the same French article.
    german = InvoiceRenderer().legal_mentions(invoice_of(sale))
    assert "Artikel 262 ter I" in german[0] and "Steuerschuldnerschaft" in german[0]


def test_export_outside_the_eu_is_exempt_with_the_mention() -> None:
    invoice = invoice_of(shipment([{"amount": "100.00", "tax": None}], country="CH"), language="fr")
    assert invoice.treatment.regime is Regime.EXPORT
    assert rates_of(invoice) == [D("0")]
    assert "article 262 I du CGI" in InvoiceRenderer().legal_mentions(invoice)[0]


def test_a_french_business_buyer_pays_french_vat() -> None:
    sale = shipment([{"amount": "120.00", "tax": "20.00"}], vat_number="FR12345678901")
    invoice = invoice_of(sale)
    assert rates_of(invoice) == [D("20")]
    assert InvoiceRenderer().legal_mentions(invoice) == []


@pytest.mark.parametrize(
    ("country", "zipcode", "vat_number", "reason"),
    [
        (None, "75001", None, "no delivery or billing country"),
        ("DE", "10115", "ES12345678", "is not one of DE"),
        ("FR", "97110", None, "overseas departments"),
        ("FR", "20000", None, "Corsica"),
    ],
)
def test_what_cannot_be_known_is_held(
    country: str | None, zipcode: str, vat_number: str | None, reason: str
) -> None:
    with pytest.raises(InvoiceHeldError, match=reason):
        treatment(country, zipcode, vat_number, VatPolicy())


def test_vat_charged_on_an_exempt_sale_is_held() -> None:
    sale = shipment([{"amount": "120.00", "tax": "20.00"}], country="DE", vat_number="DE123456789")
    with pytest.raises(InvoiceHeldError, match="the sale is exempt"):
        invoice_of(sale)


# --- Totals: what the customer paid -------------------------------------------------------


def test_the_discount_is_its_own_line_and_the_total_is_what_was_paid() -> None:
    sale = shipment(
        [{"amount": "129.90", "tax": "21.65"}, {"amount": "20.00", "tax": "3.33", "quantity": 2}],
        shipping="9.90",
        discount="5.00",
    )
    invoice = invoice_of(sale)
    assert sale.total_order == D("154.80")
    assert invoice.total_incl == D("154.80")
    (discount,) = [line for line in invoice.lines if line.kind is LineKind.DISCOUNT]
    assert (discount.title, discount.total_incl, discount.vat_rate) == (
        "Remise",
        D("-5.00"),
        D("20"),
    )
    assert invoice.total_excl + invoice.total_vat == invoice.total_incl


def test_a_discount_over_two_rates_lowers_each_in_proportion() -> None:
    sale = shipment(
        [{"amount": "105.50", "tax": "5.50"}, {"amount": "120.00", "tax": "20.00"}],
        discount="10.00",
    )
    invoice = invoice_of(sale)
    discounts = {
        line.vat_rate: line.total_incl for line in invoice.lines if line.kind is LineKind.DISCOUNT
    }
    assert discounts == {D("20"): D("-5.32"), D("5.5"): D("-4.68")}
    assert invoice.total_incl == D("215.50")


def test_a_processing_fee_the_customer_paid_is_a_line() -> None:
    sale = shipment([{"amount": "120.00", "tax": "20.00"}], processing_fee="1.50", total="121.50")
    invoice = invoice_of(sale)
    assert [(line.kind, line.title, line.total_incl) for line in invoice.lines][-1] == (
        LineKind.FEE,
        "Frais de traitement",
        D("1.50"),
    )
    assert invoice.total_incl == D("121.50")


def test_line_discounts_are_read_both_ways_and_no_other() -> None:
    lines = [{"amount": "120.00", "tax": "20.00", "discount": "12.00"}]
    before = invoice_of(shipment(lines, total="108.00"))  # amount before its discount
    assert before.total_incl == D("108.00")
    after = invoice_of(shipment(lines, total="120.00"))  # amount already net of it
    assert after.total_incl == D("120.00")
    with pytest.raises(InvoiceHeldError, match=r"total_order is 100\.00"):
        invoice_of(shipment(lines, total="100.00"))


@pytest.mark.parametrize(
    ("total", "reason"),
    [(None, "no total_order"), ("-1", "no exchange rate"), ("150.00", "do not add up")],
)
def test_a_total_that_cannot_be_reconciled_is_held(total: str | None, reason: str) -> None:
    sale = shipment([{"amount": "120.00", "tax": "20.00"}])
    sale = sale.model_copy(update={"total_order": None if total is None else D(total)})
    with pytest.raises(InvoiceHeldError, match=reason):
        invoice_of(sale)


amounts = st.decimals(min_value=D("0.01"), max_value=D("999.99"), places=2)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(amounts, st.integers(1, 12), st.sampled_from(["20", "10", "5.5", "2.1"])),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([D("0.00"), D("4.90"), D("9.90")]),
    st.sampled_from([D("0"), D("0.01"), D("5.00"), D("7.77")]),
)
def test_every_printed_figure_adds_up(
    lines: list[tuple[Decimal, int, str]], shipping: Decimal, discount: Decimal
) -> None:
    cart = [
        {"amount": str(amount), "quantity": quantity, "tax": str(vat_of(amount, D(rate)))}
        for amount, quantity, rate in lines
    ]
    charged = sum((amount for amount, _, _ in lines), D(0)) + shipping
    discount = min(discount, charged - D("0.01"))
    sale = shipment(cart, shipping=str(shipping), discount=str(discount))
    invoice = invoice_of(sale)
    assert invoice.total_incl == sale.total_order
    for line in invoice.lines:
        assert money(line.unit_price_excl * line.quantity) == line.total_excl
        assert line.total_excl + line.vat == line.total_incl
    for rate, base, vat in invoice.vat_breakdown():
        at_rate = [line for line in invoice.lines if line.vat_rate == rate]
        assert base == sum((line.total_excl for line in at_rate), D(0))
        assert vat == sum((line.vat for line in at_rate), D(0))
    assert sum((vat for _, _, vat in invoice.vat_breakdown()), D(0)) == invoice.total_vat

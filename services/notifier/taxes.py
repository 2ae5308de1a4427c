"""VAT: the rates in force, which tax treatment a sale gets, and each line's rate. Pure, no I/O.

The seller is established in France. Lengow gives each line's total including VAT (``amount``)
and, when the marketplace sends it, the line's VAT (``tax``); ``"0.00"`` or null there means
"no detail", never a 0 % rate. So a line's rate comes from its tax when that tax matches a rate
in force in the country whose VAT applies, otherwise from the seller's settings (a rate per
product, then a default), and the invoice is held rather than printed with a guessed rate.
0 % applies only where the law exempts the sale, with the mention the law requires.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

CENT = Decimal("0.01")

#: The seller's country of establishment.
SELLER_COUNTRY = "FR"


@dataclass(frozen=True)
class CountryRates:
    standard: Decimal
    reduced: tuple[Decimal, ...]

    @property
    def in_force(self) -> tuple[Decimal, ...]:
        return (self.standard, *self.reduced)


#: VAT rates in force on 2026-01-01 in the countries ManoMano sells to (manomano_fr, _es, _it,
#: _de), from the European Commission's "VAT rates applied in the Member States" (taxation and
#: customs union, TEDB). Corsica's and the overseas departments' special rates are not here:
#: an order delivered there is held (see ``treatment``). One table; tests/unit/test_taxes.py
#: checks it.
VAT_RATES: Mapping[str, CountryRates] = {
    "FR": CountryRates(Decimal("20"), (Decimal("10"), Decimal("5.5"), Decimal("2.1"))),
    "ES": CountryRates(Decimal("21"), (Decimal("10"), Decimal("4"))),
    "IT": CountryRates(Decimal("22"), (Decimal("10"), Decimal("5"), Decimal("4"))),
    "DE": CountryRates(Decimal("19"), (Decimal("7"),)),
}

#: The 27 member states (ISO 3166 codes; Greece's VAT numbers start with EL).
EU_COUNTRIES = frozenset(
    {
        "AT",
        "BE",
        "BG",
        "CY",
        "CZ",
        "DE",
        "DK",
        "EE",
        "ES",
        "FI",
        "FR",
        "GR",
        "HR",
        "HU",
        "IE",
        "IT",
        "LT",
        "LU",
        "LV",
        "MT",
        "NL",
        "PL",
        "PT",
        "RO",
        "SE",
        "SI",
        "SK",
    }
)
#: Monaco is in the French VAT territory (the Franco-Monegasque convention of 1963).
FRENCH_VAT_TERRITORY = frozenset({"FR", "MC"})
#: French departments overseas and in Corsica have other rates or none: not guessed here.
UNSUPPORTED_FRENCH_POSTCODES = ("971", "972", "973", "974", "976", "20")


class Regime(StrEnum):
    #: A sale taxed in France (French rates).
    DOMESTIC = "domestic"
    #: A distance sale to a consumer in another member state under the One-Stop-Shop scheme:
    #: the destination's rates.
    OSS = "oss"
    #: A supply to a business registered for VAT in another member state: exempt, the buyer
    #: accounts for the VAT (article 262 ter I of the CGI, article 138 of the VAT directive).
    INTRA_EU_SUPPLY = "intra_eu_supply"
    #: Goods delivered outside the EU: exempt (article 262 I of the CGI).
    EXPORT = "export"


EXEMPT_REGIMES = frozenset({Regime.INTRA_EU_SUPPLY, Regime.EXPORT})


class InvoiceHeldError(Exception):
    """The invoice cannot be issued right from the data and settings at hand; ``reason``
    says what is missing or does not add up. It is held, never sent wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VatPolicy:
    """The seller's VAT settings."""

    #: Registered for the One-Stop-Shop: EU consumers abroad pay their own country's VAT.
    one_stop_shop: bool = False
    #: For a line whose tax is missing or matches no rate: "standard" (the standard rate of
    #: the country whose VAT applies), a French rate, or None (hold the invoice instead).
    default_rate: Decimal | str | None = "standard"
    #: Rates per product, keyed by the seller's product id (``merchant_product_id``) or
    #: ManoMano's; each a French rate, or a rate per country.
    product_rates: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)


@dataclass(frozen=True)
class Treatment:
    regime: Regime
    #: Whose rates apply (None when the sale is exempt).
    rate_country: str | None
    #: The buyer's VAT number, printed on an intra-EU supply.
    buyer_vat_number: str | None = None

    @property
    def exempt(self) -> bool:
        return self.regime in EXEMPT_REGIMES


def _vat_number_country(vat_number: str) -> str:
    prefix = vat_number[:2].upper()
    return "GR" if prefix == "EL" else prefix


def treatment(
    country: str | None, zipcode: str | None, buyer_vat_number: str | None, policy: VatPolicy
) -> Treatment:
    """How the sale is taxed, from where the goods go and who buys them."""
    if not country:
        raise InvoiceHeldError("the order gives no delivery or billing country")
    country = country.upper()
    if country in FRENCH_VAT_TERRITORY:
        if country == "FR" and (zipcode or "").startswith(UNSUPPORTED_FRENCH_POSTCODES):
            raise InvoiceHeldError(
                f"delivery to postcode {zipcode}: Corsica and the overseas departments have"
                " their own VAT rules, which this invoice does not apply"
            )
        return Treatment(Regime.DOMESTIC, SELLER_COUNTRY)
    if country not in EU_COUNTRIES:
        return Treatment(Regime.EXPORT, None)
    number = "".join((buyer_vat_number or "").split()).upper()
    if number:
        if _vat_number_country(number) != country:
            raise InvoiceHeldError(
                f"the buyer's VAT number {number} is not one of {country}, where the goods go"
            )
        return Treatment(Regime.INTRA_EU_SUPPLY, None, number)
    if policy.one_stop_shop:
        if country not in VAT_RATES:
            raise InvoiceHeldError(f"no VAT rates for {country} in the table (taxes.VAT_RATES)")
        return Treatment(Regime.OSS, country)
    return Treatment(Regime.DOMESTIC, SELLER_COUNTRY)


def vat_of(total_incl: Decimal, rate: Decimal) -> Decimal:
    """The VAT inside an amount including VAT, to the cent."""
    excl = (total_incl / (1 + rate / 100)).quantize(CENT, rounding=ROUND_HALF_UP)
    return total_incl - excl


def rate_from_tax(
    total_incl: Decimal, tax: Decimal | None, quantity: int, rates: CountryRates
) -> Decimal | None:
    """The rate in force that Lengow's tax for the line shows, if it shows one: each unit's
    VAT may have been rounded on its own, so a cent per unit is allowed."""
    if tax is None or tax <= 0 or tax >= total_incl:
        return None
    tolerance = CENT * max(quantity, 1)
    matching = [r for r in rates.in_force if abs(vat_of(total_incl, r) - tax) <= tolerance]
    if len(matching) != 1:
        return None
    return matching[0]


def product_rate(
    product_ids: tuple[str, ...], country: str, policy: VatPolicy
) -> tuple[str, Decimal] | None:
    for product_id in product_ids:
        rates = policy.product_rates.get(product_id)
        if rates is not None and country in rates:
            return product_id, rates[country]
    return None


def line_rate(
    *,
    title: str,
    total_incl: Decimal,
    tax: Decimal | None,
    quantity: int,
    product_ids: tuple[str, ...],
    taxed: Treatment,
    policy: VatPolicy,
) -> Decimal:
    """The line's rate under ``taxed``; raises :class:`InvoiceHeldError` rather than guess."""
    if taxed.rate_country is None:
        if tax is not None and tax > 0:
            raise InvoiceHeldError(
                f"Lengow gives {tax} of VAT on {title!r}, but the sale is exempt"
                f" ({taxed.regime.value}): the amount paid and the exemption disagree"
            )
        return Decimal("0")
    country = taxed.rate_country
    rates = VAT_RATES[country]
    from_tax = rate_from_tax(total_incl, tax, quantity, rates)
    if from_tax is not None:
        return from_tax
    configured = product_rate(product_ids, country, policy)
    if configured is not None:
        return configured[1]
    if policy.default_rate == "standard":
        return rates.standard
    if isinstance(policy.default_rate, Decimal) and country == SELLER_COUNTRY:
        return policy.default_rate
    raise InvoiceHeldError(
        f"no VAT rate for {title!r} (products {', '.join(product_ids) or 'unknown'}) in"
        f" {country}: Lengow gives no usable tax for the line and VAT_PRODUCT_RATES has no"
        f" {country} rate for it"
        + ("" if policy.default_rate is None else " (VAT_DEFAULT_RATE is a French rate)")
    )


def checked_rates(
    product_rates: Mapping[str, Decimal | Mapping[str, Decimal]],
) -> dict[str, dict[str, Decimal]]:
    """The per-product setting, each rate checked against the table: a bare rate is French."""
    checked: dict[str, dict[str, Decimal]] = {}
    for product_id, value in product_rates.items():
        per_country = {SELLER_COUNTRY: value} if isinstance(value, Decimal) else dict(value.items())
        for country, rate in per_country.items():
            known = VAT_RATES.get(country.upper())
            if known is None or rate not in known.in_force:
                in_force = ", ".join(str(r) for r in known.in_force) if known else "no rates known"
                raise ValueError(
                    f"VAT_PRODUCT_RATES: {rate} % for {product_id} is not a rate in force in"
                    f" {country} ({in_force})"
                )
        checked[product_id] = {c.upper(): Decimal(r) for c, r in per_country.items()}
    return checked

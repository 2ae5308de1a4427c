"""The notifier's configuration, from the environment."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from services.notifier.invoice import Seller
from services.notifier.labels import Language
from services.notifier.taxes import SELLER_COUNTRY, VAT_RATES, VatPolicy, checked_rates
from shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    #: "starttls" upgrades a plain connection, "tls" connects over TLS, "none" for a local sink.
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout_seconds: float = Field(default=30.0, gt=0)
    #: SMTP sessions open at once; each is kept for further emails while it is in use.
    smtp_max_connections: int = Field(default=8, gt=0, le=100)
    #: Attempts within one delivery before the message is handed back for a later retry.
    smtp_attempts: int = Field(default=3, gt=0)
    smtp_backoff_seconds: float = Field(default=1.0, ge=0)
    #: How long a worker's claim on an invoice lasts: longer than any SMTP call.
    invoice_claim_seconds: float = Field(default=300.0, gt=0)
    #: Pause before the one resend of an email whose first attempt is in doubt.
    smtp_in_doubt_pause_seconds: float = Field(default=600.0, ge=0)
    mail_from: str = "factures@example-seller.fr"
    mail_from_name: str = "Service client"
    #: auto: each customer's documents in their billing country's language (fr, es, it, de;
    #: English elsewhere); or one language for every document.
    invoice_language: Literal["auto", "fr", "en", "es", "it", "de"] = "auto"
    #: ManoMano's three invoice options: email_at_shipment (the invoice, and each credit
    #: note, emailed when issued), on_request (numbered and archived, emailed only when asked),
    #: mandate (ManoMano invoices on the seller's behalf: the notifier issues nothing).
    invoice_mode: Literal["email_at_shipment", "on_request", "mandate"] = "email_at_shipment"
    invoice_prefix: str = Field(default="FA", pattern=r"^[A-Z0-9-]{0,10}$")
    #: Credit notes are numbered in a series of their own: AV2026-000001.
    credit_note_prefix: str = Field(default="AV", pattern=r"^[A-Z0-9-]{0,10}$")
    #: Fulfillment orders (shipped by ManoMano) get an invoice too unless this is false.
    invoice_fulfillment_orders: bool = True
    seller_legal_name: str = "Votre Société SAS"
    seller_address: str = "1 rue de l'Exemple, 75001 Paris, France"
    seller_siren: str = "000000000"
    seller_siret: str = "00000000000000"
    seller_vat_number: str = "FR00000000000"
    seller_legal_form: str | None = None
    seller_share_capital: str | None = None
    seller_rcs: str | None = None
    #: Registered for the One-Stop-Shop: EU consumers abroad are charged their country's VAT.
    vat_one_stop_shop: bool = False
    #: The rate of a line whose VAT Lengow does not give: "standard" (the standard rate of
    #: the country whose VAT applies), a French rate such as 5.5, or "none" (hold the invoice).
    vat_default_rate: str = "standard"
    #: Rates per product id (the seller's or ManoMano's): {"SKU-1": 5.5} for a French rate,
    #: {"SKU-2": {"FR": 10, "ES": 10}} per country. Checked against the table at start.
    vat_product_rates: dict[str, Decimal | dict[str, Decimal]] = Field(default_factory=dict)
    notifier_db_schema: str = "notifier"
    notifier_ops_port: int = 9103
    notifier_db_pool_size: int = 10
    retry_delay: float = 2.0

    @field_validator("vat_default_rate")
    @classmethod
    def _known_default(cls, value: str) -> str:
        if value in ("standard", "none"):
            return value
        try:
            rate = Decimal(value)
        except ArithmeticError:
            rate = None
        if rate is None or rate not in VAT_RATES[SELLER_COUNTRY].in_force:
            raise ValueError(
                f"VAT_DEFAULT_RATE must be standard, none or a French rate"
                f" ({', '.join(str(r) for r in VAT_RATES[SELLER_COUNTRY].in_force)}), not {value!r}"
            )
        return value

    @field_validator("vat_product_rates")
    @classmethod
    def _known_rates(
        cls, value: dict[str, Decimal | dict[str, Decimal]]
    ) -> dict[str, Decimal | dict[str, Decimal]]:
        checked_rates(value)
        return value

    @model_validator(mode="after")
    def _series_apart(self) -> NotifierSettings:
        if self.invoice_prefix == self.credit_note_prefix:
            raise ValueError(
                "INVOICE_PREFIX and CREDIT_NOTE_PREFIX must differ: invoices and credit notes"
                " are numbered in series of their own"
            )
        return self

    def vat_policy(self) -> VatPolicy:
        default: Decimal | str | None = self.vat_default_rate
        if default == "none":
            default = None
        elif default != "standard":
            default = Decimal(self.vat_default_rate)
        return VatPolicy(
            one_stop_shop=self.vat_one_stop_shop,
            default_rate=default,
            product_rates=checked_rates(self.vat_product_rates),
        )

    def forced_language(self) -> Language | None:
        return None if self.invoice_language == "auto" else self.invoice_language

    def seller(self) -> Seller:
        return Seller(
            legal_name=self.seller_legal_name,
            address=tuple(part.strip() for part in self.seller_address.split(",") if part.strip()),
            siren=self.seller_siren,
            siret=self.seller_siret,
            vat_number=self.seller_vat_number,
            email=self.mail_from,
            legal_form=self.seller_legal_form,
            share_capital=self.seller_share_capital,
            rcs=self.seller_rcs,
        )

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from services.notifier.invoice import build_invoice, invoice_number
from services.notifier.labels import Language
from services.notifier.mailer import (
    InvoiceMailer,
    PermanentDeliveryError,
    checked_recipient,
    message_id_for,
)
from services.notifier.rendering import InvoiceRenderer, format_money
from services.notifier.settings import NotifierSettings
from shared.contracts import OrderShipped
from tests.factories import SELLER, order_shipped


def invoice_for(**kwargs: object):  # type: ignore[no-untyped-def]
    shipment = OrderShipped.model_validate(order_shipped(**kwargs))  # type: ignore[arg-type]
    return build_invoice(
        shipment,
        seller=SELLER,
        number="FA2026-000007",
        issued_on=date(2026, 11, 24),
    )


def test_invoice_numbers_are_per_year_and_sequential() -> None:
    assert invoice_number("FA", 2026, 1) == "FA2026-000001"
    assert invoice_number("FA", 2026, 42) == "FA2026-000042"
    assert invoice_number("", 2027, 3) == "2027-000003"


def test_amounts_excluding_vat_and_totals() -> None:
    invoice = invoice_for()
    titles = [line.title for line in invoice.lines]
    assert titles == [
        "Perceuse visseuse sans fil 18V",
        "Coffret de 10 forets béton",
        "Frais de port",
    ]
    drill, bits, shipping = invoice.lines
    assert (drill.quantity, drill.total_excl, drill.vat, drill.vat_rate) == (
        1,
        Decimal("108.25"),
        Decimal("21.65"),
        Decimal("20"),
    )
    # 2 x 8.335 = 16.67: the printed unit price carries the decimals the line needs to add
    # up (8.34 would print 2 x 8,34 = 16,67).
    assert (bits.quantity, bits.unit_price_excl, bits.total_excl) == (
        2,
        Decimal("8.335"),
        Decimal("16.67"),
    )
    assert (shipping.total_excl, shipping.vat) == (Decimal("8.25"), Decimal("1.65"))
    assert invoice.total_incl == Decimal("159.80")  # equals Lengow's total_order
    assert invoice.total_excl == Decimal("133.17")
    assert invoice.total_vat == Decimal("26.63")
    assert invoice.vat_breakdown() == [(Decimal("20"), Decimal("133.17"), Decimal("26.63"))]


def test_customer_comes_from_the_billing_address() -> None:
    invoice = invoice_for()
    assert invoice.customer.name == "Camille Martin"
    assert invoice.customer.address == ("12 rue des Lilas", "69003 Lyon", "FR")
    assert invoice.customer.email == "camille.martin@example.fr"


def test_money_is_formatted_for_the_language() -> None:
    assert format_money(Decimal("1234.5"), "EUR", "fr") == "1\u00a0234,50\u00a0€"
    assert format_money(Decimal("1234.5"), "EUR", "en") == "€1,234.50"


@pytest.mark.parametrize(
    "address", [None, "", "not-an-address", "a@b", "x@example.fr\nBcc: y@z.fr"]
)
def test_unusable_recipients_are_refused_with_a_reason(address: str | None) -> None:
    with pytest.raises(PermanentDeliveryError):
        checked_recipient(address)


def test_address_needing_smtputf8_is_refused_not_crashed_on() -> None:
    with pytest.raises(PermanentDeliveryError, match="invalid billing email address"):
        checked_recipient("léa.martin@example.fr")


def test_recipient_is_normalised() -> None:
    assert checked_recipient("Camille.Martin@EXAMPLE.fr") == "Camille.Martin@example.fr"


def test_message_id_is_stable_for_an_invoice() -> None:
    assert message_id_for(invoice_for(), "shop.fr") == message_id_for(invoice_for(), "shop.fr")
    other = invoice_for(order_id="M999")
    assert message_id_for(invoice_for(), "shop.fr") != message_id_for(other, "shop.fr")
    assert message_id_for(invoice_for(), "shop.fr").startswith("<FA2026-000007.")


def test_no_header_can_be_injected_through_a_name() -> None:
    invoice = invoice_for(name="Camille\r\nBcc: victim@example.org")
    renderer = InvoiceRenderer()
    mailer = InvoiceMailer(NotifierSettings())
    message = mailer.compose(
        invoice, renderer.email(invoice), b"%PDF-", "camille.martin@example.fr", "<id@x>"
    )
    raw = message.as_bytes()
    assert b"\nBcc:" not in raw
    assert message["Bcc"] is None
    assert "Camille Bcc: victim@example.org" in str(message["To"])


@pytest.mark.parametrize("language", ["fr", "en", "es", "it", "de"])
def test_email_bodies_name_the_invoice_and_the_order(language: Language) -> None:
    invoice = replace(invoice_for(), language=language)
    rendered = InvoiceRenderer().email(invoice)
    for body in (rendered.text, rendered.html):
        assert "FA2026-000007" in body
        assert "M250112345678" in body
    assert "M250112345678" in rendered.subject


def test_html_body_escapes_customer_data() -> None:
    invoice = invoice_for(name="<script>alert(1)</script>")
    html = InvoiceRenderer().email(invoice).html
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize("name", ["Camille Martin", "Łukasz Wróbel", "Ελένη Παπαδοπούλου"])
def test_pdf_renders_any_customer_name(name: str) -> None:
    import io

    from pypdf import PdfReader

    pdf = InvoiceRenderer().pdf(invoice_for(name=name))
    text = "".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)
    assert name in text
    assert "159,80" in text
    assert "€" in text


def test_long_order_continues_on_further_pages_with_every_line() -> None:
    import io

    from pypdf import PdfReader

    shipped = order_shipped()
    line = shipped["lines"][0]
    shipped["lines"] = [{**line, "title": f"Article numéro {index:03d}"} for index in range(70)]
    shipped["total_order"] = str(70 * Decimal(line["amount"]) + Decimal(shipped["shipping"]))
    invoice = build_invoice(
        OrderShipped.model_validate(shipped),
        seller=SELLER,
        number="FA2026-000008",
        issued_on=date(2026, 11, 24),
    )
    pages = PdfReader(io.BytesIO(InvoiceRenderer().pdf(invoice))).pages
    assert len(pages) >= 3
    text = "".join(page.extract_text() for page in pages)
    for index in range(70):
        assert f"Article numéro {index:03d}" in text
    for page in pages:  # every page of the table repeats its header
        if "Article numéro" in page.extract_text():
            assert "Désignation" in page.extract_text()
    assert "Total TTC" in pages[-1].extract_text()

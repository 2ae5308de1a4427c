"""Factur-X: every invoice and credit note is a PDF/A-3 carrying EN 16931 XML. The XML is checked
with the factur-x library's own schema check (not only ours), and the PDF is read back."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal

import facturx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from pypdf import PdfReader
from pypdf.generic import IndirectObject

from services.notifier.credit_note import credit_lines
from services.notifier.factur_x import (
    FacturXError,
    checked,
    cross_industry_invoice,
    xmp_metadata,
)
from services.notifier.invoice import DocumentKind, Invoice, document_of
from services.notifier.rendering import InvoiceRenderer
from shared.contracts import LengowStatus, OrderRefunded, OrderShipped
from tests.unit.test_credit_note import AT
from tests.unit.test_invoice import SELLER
from tests.unit.test_taxes import invoice_of, shipment, vat_of

D = Decimal
NS = {
    "rsm": "urn:un:unece:uncefact:data:standard:CrossIndustryInvoice:100",
    "ram": "urn:un:unece:uncefact:data:standard:ReusableAggregateBusinessInformationEntity:100",
}
RENDERER = InvoiceRenderer()


def xml_of(document: Invoice) -> bytes:
    return cross_industry_invoice(document, RENDERER.wording(document))


def amount(xml: bytes, path: str) -> Decimal:
    root = etree.fromstring(xml)
    return D(root.findtext(path, namespaces=NS))


def amounts(xml: bytes, path: str) -> list[Decimal]:
    return [D(node.text) for node in etree.fromstring(xml).iterfind(path, namespaces=NS)]


SUMMATION = ".//ram:SpecifiedTradeSettlementHeaderMonetarySummation/"


def assert_library_accepts(xml: bytes) -> None:
    """factur-x's own check: the EN 16931 XSD it ships, found from the XML's profile."""
    assert facturx.get_level(etree.fromstring(xml)) == "en16931"
    assert facturx.xml_check_xsd(xml, flavor="factur-x", level="en16931") is True


def discounted_shipment() -> OrderShipped:
    """A 20 % and a 5.5 % line, shipping, and a voucher: 147.40 paid."""
    return shipment(
        [
            {"amount": "129.90", "tax": "21.65", "marketplace_order_line_id": "L1"},
            {"amount": "12.60", "tax": "0.66", "quantity": 2, "marketplace_order_line_id": "L2"},
        ],
        shipping="9.90",
        discount="5.00",
    )


def discounted_sale() -> Invoice:
    return invoice_of(discounted_shipment())


def test_an_invoice_is_en16931_xml_whose_totals_are_what_was_paid() -> None:
    invoice = discounted_sale()
    xml = xml_of(invoice)
    assert_library_accepts(xml)
    root = etree.fromstring(xml)
    assert root.findtext(".//rsm:ExchangedDocument/ram:TypeCode", namespaces=NS) == "380"
    assert root.findtext(".//rsm:ExchangedDocument/ram:ID", namespaces=NS) == invoice.number
    assert amount(xml, SUMMATION + "ram:GrandTotalAmount") == invoice.total_incl == D("147.40")
    assert amount(xml, SUMMATION + "ram:TaxTotalAmount") == invoice.total_vat
    assert amount(xml, SUMMATION + "ram:DuePayableAmount") == D("0")
    # Items (goods, shipping) minus the discount, as an allowance, is the taxable base.
    lines = amounts(xml, ".//ram:SpecifiedTradeSettlementLineMonetarySummation/ram:LineTotalAmount")
    allowances = amounts(xml, ".//ram:SpecifiedTradeAllowanceCharge/ram:ActualAmount")
    assert sum(lines) == amount(xml, SUMMATION + "ram:LineTotalAmount")
    assert sum(allowances) == amount(xml, SUMMATION + "ram:AllowanceTotalAmount") > 0
    basis = amount(xml, SUMMATION + "ram:TaxBasisTotalAmount")
    assert basis == sum(lines) - sum(allowances) == invoice.total_excl
    # One VAT breakdown per rate, equal to the printed one.
    taxes = etree.fromstring(xml).findall(
        ".//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax", namespaces=NS
    )
    printed = [(rate, base, vat) for rate, base, vat in invoice.vat_breakdown()]
    assert [
        (
            D(tax.findtext("ram:RateApplicablePercent", namespaces=NS)),
            D(tax.findtext("ram:BasisAmount", namespaces=NS)),
            D(tax.findtext("ram:CalculatedAmount", namespaces=NS)),
        )
        for tax in taxes
    ] == printed
    assert {tax.findtext("ram:CategoryCode", namespaces=NS) for tax in taxes} == {"S"}
    seller = root.find(".//ram:SellerTradeParty", namespaces=NS)
    assert seller.findtext("ram:SpecifiedLegalOrganization/ram:ID", namespaces=NS) == SELLER.siren
    assert seller.findtext(".//ram:SpecifiedTaxRegistration/ram:ID", namespaces=NS) == (
        SELLER.vat_number
    )


def test_an_intra_eu_business_sale_carries_the_exemption_and_the_buyers_vat_number() -> None:
    sale = shipment([{"amount": "100.00", "tax": "0.00"}], country="DE", vat_number="DE123456789")
    invoice = invoice_of(sale)
    xml = xml_of(invoice)
    assert_library_accepts(xml)
    root = etree.fromstring(xml)
    tax = root.find(".//ram:ApplicableHeaderTradeSettlement/ram:ApplicableTradeTax", NS)
    assert tax.findtext("ram:CategoryCode", namespaces=NS) == "K"
    assert tax.findtext("ram:ExemptionReasonCode", namespaces=NS) == "VATEX-EU-IC"
    assert "262 ter I" in tax.findtext("ram:ExemptionReason", namespaces=NS)
    buyer = root.find(".//ram:BuyerTradeParty", NS)
    assert buyer.findtext(".//ram:SpecifiedTaxRegistration/ram:ID", namespaces=NS) == "DE123456789"
    assert root.findtext(".//ram:ShipToTradeParty//ram:CountryID", namespaces=NS) == "DE"
    assert root.findtext(
        ".//ram:ActualDeliverySupplyChainEvent//udt:DateTimeString",
        namespaces={**NS, "udt": "urn:un:unece:uncefact:data:standard:UnqualifiedDataType:100"},
    ) == invoice.issued_on.strftime("%Y%m%d")


def test_an_export_is_category_g() -> None:
    xml = xml_of(invoice_of(shipment([{"amount": "100.00", "tax": None}], country="CH")))
    assert_library_accepts(xml)
    assert etree.fromstring(xml).findtext(".//ram:CategoryCode", namespaces=NS) == "G"
    assert "VATEX-EU-G" in xml.decode()


def test_a_credit_note_is_type_381_with_positive_amounts_and_its_invoice() -> None:
    invoice = discounted_sale()
    refund = OrderRefunded(
        **discounted_shipment().model_dump(),
        refund_status=LengowStatus.REFUNDED,
        refunded_at=AT,
    )
    lines = credit_lines(invoice.lines, refund, {})
    note = document_of(
        refund,
        seller=SELLER,
        number="AV2026-000001",
        issued_on=date(2026, 12, 2),
        lines=lines,
        kind=DocumentKind.CREDIT_NOTE,
        refers_to=invoice.number,
    )
    assert note.total_incl == -invoice.total_incl
    xml = xml_of(note)
    assert_library_accepts(xml)
    root = etree.fromstring(xml)
    assert root.findtext(".//rsm:ExchangedDocument/ram:TypeCode", namespaces=NS) == "381"
    assert root.findtext(
        ".//ram:InvoiceReferencedDocument/ram:IssuerAssignedID", namespaces=NS
    ) == (invoice.number)
    assert amount(xml, SUMMATION + "ram:GrandTotalAmount") == invoice.total_incl
    assert amount(xml, SUMMATION + "ram:AllowanceTotalAmount") > 0


def test_xml_the_schema_refuses_is_never_embedded() -> None:
    xml = xml_of(discounted_sale()).replace(b"<ram:TypeCode>380", b"<ram:Bogus>380", 1)
    with pytest.raises(FacturXError, match="EN 16931"):
        checked(xml.replace(b"</ram:TypeCode>", b"</ram:Bogus>", 1))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.decimals(min_value=D("0.01"), max_value=D("999.99"), places=2),
            st.integers(1, 12),
            st.sampled_from(["20", "10", "5.5", "2.1"]),
        ),
        min_size=1,
        max_size=5,
    ),
    st.sampled_from([D("0.00"), D("4.90")]),
    st.sampled_from([D("0"), D("0.01"), D("7.77")]),
    st.sampled_from(["FR", "DE", "CH"]),
)
def test_any_sale_gives_valid_xml_that_adds_up(
    lines: list[tuple[Decimal, int, str]], shipping: Decimal, discount: Decimal, country: str
) -> None:
    exempt = country != "FR"
    cart = [
        {
            "amount": str(value),
            "quantity": quantity,
            "tax": "0.00" if exempt else str(vat_of(value, D(rate))),
        }
        for value, quantity, rate in lines
    ]
    charged = sum((value for value, _, _ in lines), D(0)) + shipping
    discount = min(discount, charged - D("0.01"))
    vat_number = "DE123456789" if country == "DE" else None
    sale = shipment(
        cart,
        shipping=str(shipping),
        discount=str(discount),
        country=country,
        vat_number=vat_number,
    )
    invoice = invoice_of(sale)
    xml = xml_of(invoice)
    assert facturx.xml_check_xsd(xml, flavor="factur-x", level="en16931") is True
    grand = amount(xml, SUMMATION + "ram:GrandTotalAmount")
    assert grand == sale.total_order
    basis = amount(xml, SUMMATION + "ram:TaxBasisTotalAmount")
    assert basis + amount(xml, SUMMATION + "ram:TaxTotalAmount") == grand


# --- The PDF ----------------------------------------------------------------------------------


def test_the_pdf_is_pdf_a3_with_the_xml_attached_and_its_fonts_embedded() -> None:
    invoice = discounted_sale()
    pdf = RENDERER.pdf(invoice)
    filename, attached = facturx.get_xml_from_pdf(pdf, check_xsd=True)
    assert filename == "factur-x.xml"
    assert attached == xml_of(invoice)
    reader = PdfReader(io.BytesIO(pdf))
    catalog = reader.trailer["/Root"]
    # The attachment is the document's associated file, as Factur-X requires.
    (associated,) = catalog["/AF"]
    spec = associated.get_object()
    assert spec["/AFRelationship"] == "/Data"
    assert spec["/F"] == "factur-x.xml"
    assert spec["/EF"]["/F"].get_object()["/Subtype"] == "/text/xml"
    # PDF/A: the identification and Factur-X's extension in the XMP, an output intent.
    xmp = catalog["/Metadata"].get_object().get_data().decode()
    assert re.search(r"<pdfaid:part>3</pdfaid:part>", xmp)
    assert re.search(r"<pdfaid:conformance>B</pdfaid:conformance>", xmp)
    assert "<fx:ConformanceLevel>EN 16931</fx:ConformanceLevel>" in xmp
    assert "<fx:DocumentFileName>factur-x.xml</fx:DocumentFileName>" in xmp
    (intent,) = catalog["/OutputIntents"]
    assert intent.get_object()["/S"] == "/GTS_PDFA1"
    assert "/DestOutputProfile" in intent.get_object()
    # Every font is embedded (PDF/A forbids any other), and is a subset.
    for page in reader.pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object() if isinstance(font, IndirectObject) else font
            (descendant,) = font["/DescendantFonts"]
            descriptor = descendant.get_object()["/FontDescriptor"].get_object()
            assert "/FontFile2" in descriptor
            assert str(font["/BaseFont"]).split("+")[0].isupper()
    assert catalog["/Lang"] == "fr"
    text = reader.pages[0].extract_text()
    assert "147,40" in text and invoice.number in text


@pytest.mark.parametrize(
    ("country", "title", "total"),
    [
        ("ES", "FACTURA", "Total con IVA"),
        ("IT", "FATTURA", "Totale IVA incl."),
        ("DE", "RECHNUNG", "Summe brutto"),
        ("GB", "INVOICE", "Total incl. VAT"),
    ],
)
def test_the_document_is_written_in_the_customers_language(
    country: str, title: str, total: str
) -> None:
    sale = shipment([{"amount": "100.00", "tax": None}], country=country)
    invoice = invoice_of(sale)
    text = PdfReader(io.BytesIO(RENDERER.pdf(invoice))).pages[0].extract_text()
    assert title in text and total in text
    email = RENDERER.email(invoice)
    assert invoice.number in email.subject and invoice.number in email.text


def test_a_business_buyers_company_and_vat_number_are_printed() -> None:
    sale = shipment([{"amount": "120.00", "tax": "20.00"}], vat_number="FR 12 345678901")
    data = sale.model_dump()
    data["billing_address"]["company"] = "Bricolage Dupont SARL"
    invoice = invoice_of(type(sale).model_validate(data))
    assert invoice.customer.vat_number == "FR12345678901"
    text = PdfReader(io.BytesIO(RENDERER.pdf(invoice))).pages[0].extract_text()
    assert "Bricolage Dupont SARL" in text
    assert "FR12345678901" in text
    xml = xml_of(invoice)
    buyer = etree.fromstring(xml).find(".//ram:BuyerTradeParty", NS)
    assert buyer.findtext("ram:Name", namespaces=NS) == "Bricolage Dupont SARL"
    assert buyer.findtext(".//ram:SpecifiedTaxRegistration/ram:ID", namespaces=NS) == (
        "FR12345678901"
    )


def test_a_forced_language_wins_over_the_country() -> None:
    sale = shipment([{"amount": "100.00", "tax": None}], country="ES")
    assert invoice_of(sale, language="fr").language == "fr"
    assert replace(invoice_of(sale), language="it").language == "it"
    assert invoice_of(sale).language == "es"


def test_the_xmp_is_what_factur_x_writes_for_the_document() -> None:
    """Written once with blanks and filled in for each document: the same text as
    factur-x's own, with a seller's name and a title that XML must escape."""
    seller = replace(SELLER, legal_name='Outils & Fils <SARL> "Ô"')
    invoice = replace(invoice_of(discounted_shipment()), seller=seller, number="FA2026-00042")
    wording = RENDERER.wording(invoice)
    created = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    written = facturx.generate_xmp_object(
        {
            "pdfa3_flavor": "B",
            "title": f"{wording.title} {invoice.number}",
            "author": seller.legal_name,
            "subject": f"{wording.title} {invoice.number} ({invoice.order_id})",
            "producer": "fpdf2",
            "creator_tool": "lengow-orders",
            "timestamp": "2026-12-01T12:00:00+00:00",
            "version": "1.0",
            "documenttype": "INVOICE",
            "xml_filename": "factur-x.xml",
            "xmp_level": "EN 16931",
            "urn": "urn:factur-x:pdfa:CrossIndustryDocument:invoice:1p0#",
        }
    )
    assert xmp_metadata(invoice, wording, created) == etree.tostring(written, encoding="unicode")

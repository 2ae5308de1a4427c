"""The documents as a person sees them: the PDF/A-3 page (fpdf2), made a Factur-X document
with its XML (``factur_x.py``), and the email bodies (Jinja2), in the document's language."""

from __future__ import annotations

from copy import copy
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import cache
from typing import Any

from fpdf.enums import OutputIntentSubType, XPos, YPos
from fpdf.output import PDFICCProfile
from fpdf.util import builtin_srgb2014_bytes
from jinja2 import Environment, PackageLoader, select_autoescape

from services.notifier.factur_x import FILENAME, Wording, cross_industry_invoice, xmp_metadata
from services.notifier.fonts import (
    CUTS,
    FAMILY,
    LATIN,
    DrawnPDF,
    FontCut,
    PreparedFontsOutput,
    prepared_fonts,
    use_prepared_fonts,
)
from services.notifier.invoice import DocumentKind, Invoice
from services.notifier.labels import LABELS, Language
from shared.logging import get_logger

log = get_logger(__name__)

CURRENCY_SYMBOLS = {"EUR": "€", "GBP": "£", "USD": "$"}
#: PDF/A-3, level B (the look is preserved): the archival PDF that Factur-X is built on.
COMPLIANCE = "PDF/A-3B"


def format_money(value: Decimal, currency: str, language: Language) -> str:
    """Two decimals, or as many as ``value`` carries (a unit price that must add up)."""
    exponent = value.as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    text = f"{value:,.{places}f}"
    symbol = CURRENCY_SYMBOLS.get(currency, currency)
    if language == "en":
        return f"{symbol}{text}"
    thousands = "\u00a0" if language == "fr" else "."
    text = text.replace(",", "\x00").replace(".", ",").replace("\x00", thousands)
    return f"{text}\u00a0{symbol}"


def format_rate(rate: Decimal, language: Language) -> str:
    text = f"{rate.normalize():f}"
    return (text if language == "en" else text.replace(".", ",")) + " %"


def format_date(value: date, language: Language) -> str:
    formats = {"en": "%Y-%m-%d", "de": "%d.%m.%Y"}
    return value.strftime(formats.get(language, "%d/%m/%Y"))


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


ACCENT = (33, 76, 128)
MUTED = (110, 110, 110)
INK = (30, 30, 30)


@dataclass(frozen=True)
class Page:
    """What every section of the page draws with; the sections keep no state of their own."""

    pdf: DrawnPDF
    invoice: Invoice
    labels: dict[str, str]

    @property
    def drawn(self) -> set[str]:
        """Every character drawn: which font cut holds them, which outlines to embed."""
        return self.pdf.drawn

    @property
    def language(self) -> Language:
        return self.invoice.language

    @property
    def left(self) -> float:
        return float(self.pdf.l_margin)

    @property
    def width(self) -> float:
        return float(self.pdf.w - self.pdf.l_margin - self.pdf.r_margin)

    @property
    def bottom(self) -> float:
        """Where the table stops: the footer sits below."""
        return float(self.pdf.h - 28)

    @property
    def credit_note(self) -> bool:
        return self.invoice.kind is DocumentKind.CREDIT_NOTE

    @property
    def title(self) -> str:
        return self.labels["credit_note" if self.credit_note else "invoice"]

    def money(self, value: Decimal) -> str:
        return format_money(value, self.invoice.currency, self.language)

    def font(self, size: float, *, bold: bool = False, color: tuple[int, int, int] = INK) -> None:
        self.pdf.set_font(FAMILY, "B" if bold else "", size)
        self.pdf.set_text_color(*color)

    def box(
        self,
        x: float,
        y: float,
        width: float,
        height: float,
        text: str,
        align: str = "L",
        *,
        fill: bool = False,
    ) -> None:
        """One line of text in a box, placed as ``FPDF.cell`` places it (padding, alignment,
        baseline), without moving the cursor: ``text`` costs a tenth of a ``cell``."""
        pdf = self.pdf
        if fill:
            pdf.rect(x, y, width, height, style="F")
        if not text:
            return
        self.drawn.update(text)
        if align == "R":
            x += width - pdf.c_margin - self.text_width(text)
        elif align == "C":
            x += (width - self.text_width(text)) / 2
        else:
            x += pdf.c_margin
        pdf.text(x, y + 0.5 * height + 0.3 * pdf.font_size, text)

    def text_width(self, text: str) -> float:
        """``FPDF.get_string_width`` of one run of plain text in the current font, without
        first splitting the text into styled fragments (which costs more than placing it)."""
        pdf = self.pdf
        assert pdf.current_font is not None, "a font is set before any text"
        _, points = pdf.current_font.get_text_width(
            pdf.normalize_text(text), pdf.font_size_pt, None
        )
        return float(points) / pdf.k

    def shortened(self, text: str, width: float) -> str:
        if self.text_width(text) < width:
            return text
        while text and self.text_width(text + "…") > width - 2:
            text = text[:-1]
        return text + "…"


# --- The sections of the page, top to bottom ---------------------------------------------


def seller_block(page: Page) -> float:
    """The seller's name and address (top left); returns where it ends."""
    seller = page.invoice.seller
    left, half, y = page.left, page.width / 2, float(page.pdf.t_margin)
    page.font(15, bold=True, color=ACCENT)
    page.box(left, y, half, 8, seller.legal_name)
    y += 8
    page.font(9.5, color=(60, 60, 60))
    for line in (*seller.address, *([seller.email] if seller.email else [])):
        page.box(left, y, half, 5, line)
        y += 5
    return y


def title_block(page: Page) -> float:
    """The title, the number and the dates (top right); returns where it ends."""
    invoice, labels = page.invoice, page.labels
    half, y = page.width / 2, float(page.pdf.t_margin)
    right = page.left + half
    page.font(22, bold=True, color=ACCENT)
    page.box(right, y, half, 11, page.title.upper(), "R")
    y += 11
    facts = [
        (labels["credit_note_number" if page.credit_note else "number"], invoice.number),
        (labels["issued_on"], format_date(invoice.issued_on, page.language)),
        (labels["order"], invoice.order_id),
    ]
    if invoice.refers_to:
        facts.insert(1, (labels["refers_to"], invoice.refers_to))
    if invoice.order_date is not None:
        facts.append((labels["order_date"], format_date(invoice.order_date, page.language)))
    for label, fact in facts:
        page.font(10, color=MUTED)
        page.box(right, y, half / 2, 5.5, label, "R")
        page.font(10, bold=True)
        page.box(right + half / 2, y, half / 2, 5.5, fact, "R")
        y += 5.5
    return y


def customer_block(page: Page, y: float) -> float:
    """Who is billed: name, company and its VAT number, address, email."""
    customer, labels = page.invoice.customer, page.labels
    left, half = page.left, page.width / 2
    lines = [customer.company] if customer.company else []
    if customer.vat_number:
        lines.append(f"{labels['vat_number']} {customer.vat_number}")
    lines += [line for line in (*customer.address, customer.email) if line]
    height = 9 + 5 * (1 + len(lines))
    page.pdf.set_fill_color(244, 246, 250)
    page.pdf.rect(left, y, half, height, style="F")
    x, line_y = left + 4, y + 3
    page.font(8.5, bold=True, color=MUTED)
    page.box(x, line_y, half - 4, 5, labels["billed_to"].upper())
    page.font(11, bold=True)
    page.box(x, line_y + 5, half - 4, 6, customer.name or "-")
    line_y += 11
    page.font(10)
    for line in lines:
        page.box(x, line_y, half - 4, 5, line)
        line_y += 5
    return y + height


def _columns(page: Page) -> list[tuple[str, float, str]]:
    labels, width = page.labels, page.width
    return [
        (labels["item"], width * 0.42, "L"),
        (labels["quantity"], width * 0.08, "R"),
        (labels["unit_price"], width * 0.20, "R"),
        (labels["vat_rate"], width * 0.12, "R"),
        (labels["total_excl"], width * 0.18, "R"),
    ]


def table_header(page: Page, y: float) -> float:
    page.font(9.5, bold=True, color=(255, 255, 255))
    page.pdf.set_fill_color(*ACCENT)
    x = page.left
    for title, width, align in _columns(page):
        page.box(x, y, width, 8, f" {title} ", align, fill=True)
        x += width
    return y + 8


def lines_table(page: Page, y: float) -> float:
    """One row per line, continued on further pages under the header again."""
    pdf, language = page.pdf, page.language
    columns = _columns(page)
    y = table_header(page, y)
    for index, item in enumerate(page.invoice.lines):
        if y + 7.5 > page.bottom:
            pdf.add_page()
            y = table_header(page, pdf.t_margin)
        page.font(9.5)
        pdf.set_fill_color(248, 249, 251)
        cells = [
            item.title,
            str(item.quantity),
            page.money(item.unit_price_excl),
            format_rate(item.vat_rate, language),
            page.money(item.total_excl),
        ]
        x = page.left
        for (_, width, align), cell in zip(columns, cells, strict=True):
            text = page.shortened(cell, width - 3)
            page.box(x, y, width, 7.5, f" {text} ", align, fill=index % 2 == 1)
            x += width
        y += 7.5
    pdf.set_draw_color(*ACCENT)
    pdf.line(page.left, y, page.left + page.width, y)
    return y + 4


def vat_breakdown(page: Page, y: float) -> float:
    """Base and VAT per rate (left): the sums of the lines at each rate."""
    left, width, labels = page.left, page.width, page.labels
    page.font(8.5, bold=True, color=MUTED)
    page.box(left, y, width * 0.15, 5, labels["vat_rate"])
    page.box(left + width * 0.15, y, width * 0.17, 5, labels["vat_base"], "R")
    page.box(left + width * 0.32, y, width * 0.15, 5, labels["vat"], "R")
    y += 5
    page.font(9)
    for rate, base, vat in page.invoice.vat_breakdown():
        page.box(left, y, width * 0.15, 5, format_rate(rate, page.language))
        page.box(left + width * 0.15, y, width * 0.17, 5, page.money(base), "R")
        page.box(left + width * 0.32, y, width * 0.15, 5, page.money(vat), "R")
        y += 5
    return y


def totals(page: Page, y: float) -> float:
    """Totals excluding VAT, VAT, including VAT (right)."""
    invoice, labels, width = page.invoice, page.labels, page.width
    rows = [
        (labels["total_excl"], invoice.total_excl, False),
        (labels["vat"], invoice.total_vat, False),
        (labels["total_incl"], invoice.total_incl, True),
    ]
    x = page.left + width * 0.55
    for label, value, strong in rows:
        if strong:
            page.pdf.set_fill_color(*ACCENT)
            page.font(11.5, bold=True, color=(255, 255, 255))
        else:
            page.font(10)
        height = 8 if strong else 6.5
        page.box(x, y, width * 0.25, height, f" {label}", fill=strong)
        page.box(
            x + width * 0.25, y, width * 0.20, height, f"{page.money(value)} ", "R", fill=strong
        )
        y += height
    return y


def summary(page: Page, y: float) -> float:
    """The VAT breakdown beside the totals, on a new page when they would not fit."""
    if y + max(5 * (1 + len(page.invoice.vat_breakdown())), 21) + 18 > page.bottom:
        page.pdf.add_page()
        y = page.pdf.t_margin
    return max(vat_breakdown(page, y), totals(page, y)) + 8


def notes(page: Page, y: float, mentions: list[str]) -> float:
    """How it was paid or refunded, the VAT mentions the law requires, the shipment."""
    invoice, labels, pdf = page.invoice, page.labels, page.pdf
    page.font(9.5)
    lines = [labels["refunded" if page.credit_note else "paid"], *mentions]
    if invoice.carrier and not page.credit_note:
        shipped = f"{labels['shipped_with']} {invoice.carrier}"
        if invoice.tracking_number:
            shipped += f" ({labels['tracking']} {invoice.tracking_number})"
        lines.append(shipped + ".")
    for line in lines:
        if page.text_width(line) <= page.width - 2 * pdf.c_margin:
            page.box(page.left, y, page.width, 5, line)
            y += 5
        else:  # a long mention, carrier name or tracking number wraps
            page.drawn.update(line)
            pdf.set_xy(page.left, y)
            pdf.multi_cell(page.width, 5, line, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            y = pdf.get_y()
    return y


def legal_footer(page: Page) -> None:
    """The seller's identity and registrations, at the foot of the last page."""
    seller, labels = page.invoice.seller, page.labels
    identity = [seller.legal_name]
    if seller.legal_form:
        identity.append(seller.legal_form)
    if seller.share_capital:
        identity.append(f"{labels['capital']} {seller.share_capital}")
    registration = [f"{labels['siren']} {seller.siren}", f"{labels['siret']} {seller.siret}"]
    if seller.rcs:
        registration.append(seller.rcs)
    registration.append(f"{labels['vat_number']} {seller.vat_number}")
    left, width, y = page.left, page.width, page.pdf.h - 24
    page.pdf.set_draw_color(210, 210, 210)
    page.pdf.line(left, y, left + width, y)
    page.font(7.5, color=MUTED)
    page.box(left, y + 2, width, 4, " · ".join(identity) + " · " + ", ".join(seller.address), "C")
    page.box(left, y + 6, width, 4, " · ".join(registration), "C")


class InvoiceRenderer:
    """Renders invoices and credit notes, each in its own language."""

    def __init__(self) -> None:
        self._templates = Environment(
            loader=PackageLoader("services.notifier", "templates"),
            autoescape=select_autoescape(["html", "html.j2"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        prepared_fonts(LATIN)  # at start, not in the first customer's delivery

    @staticmethod
    def legal_mentions(invoice: Invoice) -> list[str]:
        """What the law requires the invoice to say about its VAT: an exemption's ground."""
        taxed, labels = invoice.treatment, LABELS[invoice.language]
        if not taxed.exempt:
            return []
        mentions = [labels[f"mention_{taxed.regime.value}"]]
        if taxed.buyer_vat_number:
            mentions.append(f"{labels['buyer_vat_number']} {taxed.buyer_vat_number}")
        return mentions

    def wording(self, invoice: Invoice) -> Wording:
        labels = LABELS[invoice.language]
        title = labels["credit_note" if invoice.kind is DocumentKind.CREDIT_NOTE else "invoice"]
        mentions = self.legal_mentions(invoice)
        return Wording(
            title=title,
            exemption=mentions[0] if mentions else None,
            notes=(labels["refunded" if invoice.kind is DocumentKind.CREDIT_NOTE else "paid"],),
        )

    # --- Email -----------------------------------------------------------------------

    def email(self, invoice: Invoice) -> RenderedEmail:
        language, labels = invoice.language, LABELS[invoice.language]
        credit_note = invoice.kind is DocumentKind.CREDIT_NOTE
        context: dict[str, Any] = {
            "invoice": invoice,
            "labels": labels,
            # A credit note's amounts are negative; the email says how much comes back.
            "total": format_money(abs(invoice.total_incl), invoice.currency, language),
            "issued_on": format_date(invoice.issued_on, language),
            "credit_note": credit_note,
        }
        subject = labels["subject_credit_note" if credit_note else "subject"]
        return RenderedEmail(
            subject=subject.format(number=invoice.number, order=invoice.order_id),
            text=self._templates.get_template(f"email_{language}.txt.j2").render(context),
            html=self._templates.get_template(f"email_{language}.html.j2").render(context),
        )

    # --- PDF -------------------------------------------------------------------------

    def pdf(self, invoice: Invoice) -> bytes:
        """The Factur-X document: the page, with the XML a machine reads attached."""
        wording = self.wording(invoice)
        return self.page(invoice, cross_industry_invoice(invoice, wording), wording)

    def page(
        self, invoice: Invoice, xml: bytes | None = None, wording: Wording | None = None
    ) -> bytes:
        """The invoice on A4, PDF/A-3B, its font embedded; ``xml`` attached when given."""
        for cut in CUTS:
            page = self._draw(invoice, xml, wording, cut)
            if cut.holds(page.drawn):
                break
        left_out = sorted(cut.lacks(page.drawn))
        if left_out:
            log.warning(
                "document.characters_left_out",
                invoice_number=invoice.number,
                characters="".join(left_out),
                reason="the embedded font has no glyph for them",
            )
        return bytes(page.pdf.output(output_producer_class=PreparedFontsOutput))

    def _draw(
        self, invoice: Invoice, xml: bytes | None, wording: Wording | None, cut: FontCut
    ) -> Page:
        pdf = DrawnPDF(format="A4", enforce_compliance=COMPLIANCE)
        page = Page(pdf, invoice, LABELS[invoice.language])
        created = _midday(invoice.issued_on)
        pdf.set_title(f"{page.title} {invoice.number}")
        pdf.set_author(invoice.seller.legal_name)
        pdf.set_creator("lengow-orders")
        pdf.set_lang(invoice.language)
        pdf.set_creation_date(created)
        if xml is not None:
            pdf.set_xmp_metadata(xmp_metadata(invoice, wording or self.wording(invoice), created))
            pdf.embed_file(
                bytes=xml,
                basename=FILENAME,
                modification_date=created,
                mime_type="text/xml",
                associated_file_relationship="Data",
                desc="Factur-X XML file",
                compress=True,
                checksum=True,
            )
        use_prepared_fonts(pdf, cut)
        # What fpdf2 adds for PDF/A when none is given, but with the profile read and
        # compressed once per process rather than for each document.
        pdf.add_output_intent(
            OutputIntentSubType.PDFA,
            output_condition_identifier="sRGB",
            output_condition="IEC 61966-2-1:1999",
            registry_name="http://www.color.org",
            dest_output_profile=copy(_srgb_profile()),
            info="sRGB2014 (v2)",
        )
        pdf.set_auto_page_break(auto=False)  # pages are broken between table rows
        pdf.set_margins(18, 18, 18)
        pdf.add_page()
        y = max(seller_block(page), title_block(page)) + 8
        y = customer_block(page, y) + 8
        y = lines_table(page, y)
        y = summary(page, y)
        notes(page, y, self.legal_mentions(invoice))
        legal_footer(page)
        return page


@cache
def _srgb_profile() -> PDFICCProfile:
    return PDFICCProfile(contents=builtin_srgb2014_bytes(), n=3, alternate="DeviceRGB")


def _midday(day: date) -> datetime:
    return datetime.combine(day, time(12, 0), UTC)

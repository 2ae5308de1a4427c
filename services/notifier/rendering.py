"""The invoice as a person sees it: the PDF (fpdf2) and the email bodies (Jinja2)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from importlib import resources
from typing import Any, Literal

import font_source_sans_pro
from fpdf import FPDF
from fpdf.enums import XPos, YPos
from jinja2 import Environment, PackageLoader, select_autoescape

from services.notifier.invoice import DocumentKind, Invoice, LineTitles

Language = Literal["fr", "en"]

LABELS: dict[Language, dict[str, str]] = {
    "fr": {
        "invoice": "Facture",
        "number": "N° de facture",
        "issued_on": "Date d'émission",
        "order": "Commande ManoMano",
        "order_date": "Date de commande",
        "billed_to": "Facturé à",
        "seller": "Vendeur",
        "item": "Désignation",
        "quantity": "Qté",
        "unit_price": "PU HT",
        "vat_rate": "TVA",
        "total_excl": "Total HT",
        "vat": "TVA",
        "total_incl": "Total TTC",
        "vat_base": "Base HT",
        "shipping": "Frais de port",
        "fee": "Frais de traitement",
        "discount": "Remise",
        "buyer_vat_number": "N° TVA intracommunautaire du client :",
        "mention_intra_eu_supply": (
            "Exonération de TVA, article 262 ter I du CGI : livraison intracommunautaire."
            " Autoliquidation par le preneur."
        ),
        "mention_export": "Exonération de TVA, article 262 I du CGI : exportation hors UE.",
        "shipped_with": "Expédiée par",
        "tracking": "suivi",
        "paid": "Facture acquittée : réglée par le client sur ManoMano.",
        "credit_note": "Avoir",
        "credit_note_number": "N° d'avoir",
        "refers_to": "Facture d'origine",
        "refunded": "Avoir remboursé au client sur ManoMano.",
        "subject_credit_note": "Votre avoir {number} pour la commande {order}",
        "siren": "SIREN",
        "siret": "SIRET",
        "vat_number": "N° TVA intracommunautaire",
        "capital": "au capital de",
        "page": "Page",
        "subject": "Votre facture {number} pour la commande {order}",
    },
    "en": {
        "invoice": "Invoice",
        "number": "Invoice number",
        "issued_on": "Issue date",
        "order": "ManoMano order",
        "order_date": "Order date",
        "billed_to": "Billed to",
        "seller": "Seller",
        "item": "Item",
        "quantity": "Qty",
        "unit_price": "Unit price excl. VAT",
        "vat_rate": "VAT",
        "total_excl": "Total excl. VAT",
        "vat": "VAT",
        "total_incl": "Total incl. VAT",
        "vat_base": "Base excl. VAT",
        "shipping": "Shipping",
        "fee": "Processing fee",
        "discount": "Discount",
        "buyer_vat_number": "Customer's VAT number:",
        "mention_intra_eu_supply": (
            "VAT exempt, article 262 ter I of the French tax code (CGI): intra-Community"
            " supply. Reverse charge: the customer accounts for the VAT."
        ),
        "mention_export": "VAT exempt, article 262 I of the French tax code (CGI): export.",
        "shipped_with": "Shipped with",
        "tracking": "tracking",
        "paid": "Paid: settled by the customer on ManoMano.",
        "credit_note": "Credit note",
        "credit_note_number": "Credit note number",
        "refers_to": "Original invoice",
        "refunded": "Credit note refunded to the customer on ManoMano.",
        "subject_credit_note": "Your credit note {number} for order {order}",
        "siren": "SIREN",
        "siret": "SIRET",
        "vat_number": "VAT number",
        "capital": "share capital",
        "page": "Page",
        "subject": "Your invoice {number} for order {order}",
    },
}

CURRENCY_SYMBOLS = {"EUR": "€", "GBP": "£", "USD": "$"}


def format_money(value: Decimal, currency: str, language: Language) -> str:
    """Two decimals, or as many as ``value`` carries (a unit price that must add up)."""
    exponent = value.as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    text = f"{value:,.{places}f}"
    symbol = CURRENCY_SYMBOLS.get(currency, currency)
    if language == "fr":
        return text.replace(",", "\u00a0").replace(".", ",") + f"\u00a0{symbol}"
    return f"{symbol}{text}"


def format_rate(rate: Decimal, language: Language) -> str:
    text = f"{rate.normalize():f}"
    return (text.replace(".", ",") if language == "fr" else text) + " %"


def format_date(value: date, language: Language) -> str:
    return value.strftime("%d/%m/%Y" if language == "fr" else "%Y-%m-%d")


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


class InvoiceRenderer:
    """Renders invoices in one language."""

    ACCENT = (33, 76, 128)
    MUTED = (110, 110, 110)

    def __init__(self, language: Language = "fr") -> None:
        self.language: Language = language
        self.labels = LABELS[language]
        self._templates = Environment(
            loader=PackageLoader("services.notifier", "templates"),
            autoescape=select_autoescape(["html", "html.j2"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        fonts = resources.files(font_source_sans_pro).joinpath("files")
        self._font_regular = str(fonts.joinpath("SourceSansPro-Regular.ttf"))
        self._font_bold = str(fonts.joinpath("SourceSansPro-Bold.ttf"))
        self._family = "helvetica"

    @property
    def titles(self) -> LineTitles:
        labels = self.labels
        return LineTitles(labels["shipping"], labels["fee"], labels["discount"])

    def legal_mentions(self, invoice: Invoice) -> list[str]:
        """What the law requires the invoice to say about its VAT: an exemption's ground."""
        taxed = invoice.treatment
        if not taxed.exempt:
            return []
        mentions = [self.labels[f"mention_{taxed.regime.value}"]]
        if taxed.buyer_vat_number:
            mentions.append(f"{self.labels['buyer_vat_number']} {taxed.buyer_vat_number}")
        return mentions

    def money(self, value: Decimal, invoice: Invoice) -> str:
        return format_money(value, invoice.currency, self.language)

    # --- Email -----------------------------------------------------------------------

    def email(self, invoice: Invoice) -> RenderedEmail:
        context: dict[str, Any] = {
            "invoice": invoice,
            "labels": self.labels,
            # A credit note's amounts are negative; the email says how much comes back.
            "total": self.money(abs(invoice.total_incl), invoice),
            "issued_on": format_date(invoice.issued_on, self.language),
            "credit_note": invoice.kind is DocumentKind.CREDIT_NOTE,
        }
        subject_label = "subject_credit_note" if context["credit_note"] else "subject"
        subject = self.labels[subject_label].format(number=invoice.number, order=invoice.order_id)
        return RenderedEmail(
            subject=subject,
            text=self._templates.get_template(f"email_{self.language}.txt.j2").render(context),
            html=self._templates.get_template(f"email_{self.language}.html.j2").render(context),
        )

    # --- PDF -------------------------------------------------------------------------

    def _choose_font(self, pdf: FPDF, invoice: Invoice) -> None:
        """Helvetica in Windows-1252 (every Western European letter, the euro sign) needs no
        embedding and renders twenty times faster; an invoice with other characters (a
        Polish or Greek name) embeds a Unicode font instead."""
        if all(_in_cp1252(text) for text in _texts(invoice)):
            pdf.core_fonts_encoding = "windows-1252"
            self._family = "helvetica"
        else:
            pdf.add_font("Sans", "", self._font_regular)
            pdf.add_font("Sans", "B", self._font_bold)
            self._family = "Sans"

    def pdf(self, invoice: Invoice) -> bytes:
        """The invoice on A4, laid out by hand: every piece of text is placed with fpdf2's
        ``text`` (a tenth of the cost of a ``cell``, which measured more than the rest of
        issuing and emailing an invoice together)."""
        labels = self.labels
        pdf = FPDF(format="A4")
        credit_note = invoice.kind is DocumentKind.CREDIT_NOTE
        title = labels["credit_note"] if credit_note else labels["invoice"]
        pdf.set_title(f"{title} {invoice.number}")
        pdf.set_author(invoice.seller.legal_name)
        pdf.set_creator("lengow-orders")
        pdf.set_creation_date(_midday(invoice.issued_on))
        self._choose_font(pdf, invoice)
        pdf.set_auto_page_break(auto=False)  # pages are broken below, between table rows
        pdf.set_margins(18, 18, 18)
        pdf.add_page()
        family = self._family
        left = pdf.l_margin
        width = pdf.w - pdf.l_margin - pdf.r_margin
        half = width / 2
        bottom = pdf.h - 28  # the footer sits below

        # Seller (left) and title block (right).
        top = pdf.t_margin
        pdf.set_font(family, "B", 15)
        pdf.set_text_color(*self.ACCENT)
        _box(pdf, left, top, half, 8, invoice.seller.legal_name)
        y = top + 8
        pdf.set_font(family, "", 9.5)
        pdf.set_text_color(60, 60, 60)
        seller_lines = [*invoice.seller.address]
        if invoice.seller.email:
            seller_lines.append(invoice.seller.email)
        for line in seller_lines:
            _box(pdf, left, y, half, 5, line)
            y += 5
        seller_bottom = y

        pdf.set_font(family, "B", 22)
        pdf.set_text_color(*self.ACCENT)
        _box(pdf, left + half, top, half, 11, title.upper(), "R")
        y = top + 11
        facts = [
            (labels["credit_note_number" if credit_note else "number"], invoice.number),
            (labels["issued_on"], format_date(invoice.issued_on, self.language)),
            (labels["order"], invoice.order_id),
        ]
        if invoice.refers_to:
            facts.insert(1, (labels["refers_to"], invoice.refers_to))
        if invoice.order_date is not None:
            facts.append((labels["order_date"], format_date(invoice.order_date, self.language)))
        for label, fact in facts:
            pdf.set_font(family, "", 10)
            pdf.set_text_color(*self.MUTED)
            _box(pdf, left + half, y, half / 2, 5.5, label, "R")
            pdf.set_font(family, "B", 10)
            pdf.set_text_color(30, 30, 30)
            _box(pdf, left + half * 1.5, y, half / 2, 5.5, fact, "R")
            y += 5.5

        # Customer.
        y = max(seller_bottom, y) + 8
        customer = invoice.customer
        customer_lines = [
            line for line in (customer.company, *customer.address, customer.email) if line
        ]
        box_height = 9 + 5 * (1 + len(customer_lines))
        pdf.set_fill_color(244, 246, 250)
        pdf.rect(left, y, half, box_height, style="F")
        x, line_y = left + 4, y + 3
        pdf.set_font(family, "B", 8.5)
        pdf.set_text_color(*self.MUTED)
        _box(pdf, x, line_y, half - 4, 5, labels["billed_to"].upper())
        pdf.set_font(family, "B", 11)
        pdf.set_text_color(30, 30, 30)
        _box(pdf, x, line_y + 5, half - 4, 6, customer.name or "-")
        line_y += 11
        pdf.set_font(family, "", 10)
        for line in customer_lines:
            _box(pdf, x, line_y, half - 4, 5, line)
            line_y += 5
        y += box_height + 8

        # Lines.
        columns = [
            (labels["item"], width * 0.46, "L"),
            (labels["quantity"], width * 0.08, "R"),
            (labels["unit_price"], width * 0.16, "R"),
            (labels["vat_rate"], width * 0.12, "R"),
            (labels["total_excl"], width * 0.18, "R"),
        ]

        def table_header(y: float) -> float:
            pdf.set_font(family, "B", 9.5)
            pdf.set_fill_color(*self.ACCENT)
            pdf.set_text_color(255, 255, 255)
            x = left
            for title, column_width, align in columns:
                _box(pdf, x, y, column_width, 8, f" {title} ", align, fill=True)
                x += column_width
            pdf.set_font(family, "", 9.5)
            pdf.set_text_color(30, 30, 30)
            pdf.set_fill_color(248, 249, 251)
            return y + 8

        y = table_header(y)
        for index, item in enumerate(invoice.lines):
            if y + 7.5 > bottom:
                pdf.add_page()
                y = table_header(pdf.t_margin)
            values = [
                item.title,
                str(item.quantity),
                self.money(item.unit_price_excl, invoice),
                format_rate(item.vat_rate, self.language),
                self.money(item.total_excl, invoice),
            ]
            x = left
            for (_, column_width, align), cell in zip(columns, values, strict=True):
                text = (
                    cell
                    if _width(pdf, cell) < column_width - 3
                    else _shorten(pdf, cell, column_width - 5)
                )
                _box(pdf, x, y, column_width, 7.5, f" {text} ", align, fill=index % 2 == 1)
                x += column_width
            y += 7.5
        pdf.set_draw_color(*self.ACCENT)
        pdf.line(left, y, left + width, y)
        y += 4

        # VAT breakdown (left) and totals (right).
        breakdown = invoice.vat_breakdown()
        if y + max(5 * (1 + len(breakdown)), 21) + 18 > bottom:
            pdf.add_page()
            y = pdf.t_margin
        totals_top = y
        pdf.set_font(family, "B", 8.5)
        pdf.set_text_color(*self.MUTED)
        _box(pdf, left, y, width * 0.15, 5, labels["vat_rate"])
        _box(pdf, left + width * 0.15, y, width * 0.17, 5, labels["vat_base"], "R")
        _box(pdf, left + width * 0.32, y, width * 0.15, 5, labels["vat"], "R")
        y += 5
        pdf.set_font(family, "", 9)
        pdf.set_text_color(30, 30, 30)
        for rate, base, vat in breakdown:
            _box(pdf, left, y, width * 0.15, 5, format_rate(rate, self.language))
            _box(pdf, left + width * 0.15, y, width * 0.17, 5, self.money(base, invoice), "R")
            _box(pdf, left + width * 0.32, y, width * 0.15, 5, self.money(vat, invoice), "R")
            y += 5
        breakdown_bottom = y

        y = totals_top
        rows = [
            (labels["total_excl"], invoice.total_excl, False),
            (labels["vat"], invoice.total_vat, False),
            (labels["total_incl"], invoice.total_incl, True),
        ]
        for label, value, strong in rows:
            if strong:
                pdf.set_fill_color(*self.ACCENT)
                pdf.set_text_color(255, 255, 255)
                pdf.set_font(family, "B", 11.5)
            else:
                pdf.set_text_color(30, 30, 30)
                pdf.set_font(family, "", 10)
            height = 8 if strong else 6.5
            x = left + width * 0.55
            _box(pdf, x, y, width * 0.25, height, f" {label}", fill=strong)
            money = f"{self.money(value, invoice)} "
            _box(pdf, x + width * 0.25, y, width * 0.20, height, money, "R", fill=strong)
            y += height
        y = max(y, breakdown_bottom) + 8

        pdf.set_text_color(30, 30, 30)
        pdf.set_font(family, "", 9.5)
        notes = [labels["refunded" if credit_note else "paid"], *self.legal_mentions(invoice)]
        if invoice.carrier and not credit_note:
            shipped = f"{labels['shipped_with']} {invoice.carrier}"
            if invoice.tracking_number:
                shipped += f" ({labels['tracking']} {invoice.tracking_number})"
            notes.append(shipped + ".")
        for note in notes:
            if _width(pdf, note) <= width - 2 * pdf.c_margin:
                _box(pdf, left, y, width, 5, note)
                y += 5
            else:  # rare: a long carrier name or tracking number wraps
                pdf.set_xy(left, y)
                pdf.multi_cell(width, 5, note, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
                y = pdf.get_y()

        # Legal footer.
        seller = invoice.seller
        identity = [seller.legal_name]
        if seller.legal_form:
            identity.append(seller.legal_form)
        if seller.share_capital:
            identity.append(f"{labels['capital']} {seller.share_capital}")
        registration = [f"{labels['siren']} {seller.siren}", f"{labels['siret']} {seller.siret}"]
        if seller.rcs:
            registration.append(seller.rcs)
        registration.append(f"{labels['vat_number']} {seller.vat_number}")
        y = pdf.h - 24
        pdf.set_draw_color(210, 210, 210)
        pdf.line(left, y, left + width, y)
        pdf.set_font(family, "", 7.5)
        pdf.set_text_color(*self.MUTED)
        identity_line = " · ".join(identity) + " · " + ", ".join(seller.address)
        _box(pdf, left, y + 2, width, 4, identity_line, "C")
        _box(pdf, left, y + 6, width, 4, " · ".join(registration), "C")
        return bytes(pdf.output())


def _box(
    pdf: FPDF,
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
    baseline), without moving the cursor."""
    if fill:
        pdf.rect(x, y, width, height, style="F")
    if not text:
        return
    if align == "R":
        x += width - pdf.c_margin - _width(pdf, text)
    elif align == "C":
        x += (width - _width(pdf, text)) / 2
    else:
        x += pdf.c_margin
    pdf.text(x, y + 0.5 * height + 0.3 * pdf.font_size, text)


def _width(pdf: FPDF, text: str) -> float:
    """``FPDF.get_string_width`` of one run of plain text in the current font (these invoices
    use no markdown, character spacing or stretching): the same figure, without first
    splitting the text into styled fragments, which cost more than placing the text."""
    assert pdf.current_font is not None, "a font is set before any text"
    _, points = pdf.current_font.get_text_width(pdf.normalize_text(text), pdf.font_size_pt, None)
    return points / pdf.k


def _in_cp1252(text: str) -> bool:
    try:
        text.encode("cp1252")
    except UnicodeEncodeError:
        return False
    return True


def _texts(invoice: Invoice) -> list[str]:
    seller, customer = invoice.seller, invoice.customer
    return [
        seller.legal_name,
        *seller.address,
        seller.email or "",
        seller.legal_form or "",
        seller.share_capital or "",
        seller.rcs or "",
        customer.name,
        customer.company or "",
        *customer.address,
        customer.email or "",
        invoice.order_id,
        invoice.carrier or "",
        invoice.tracking_number or "",
        *(line.title for line in invoice.lines),
    ]


def _shorten(pdf: FPDF, text: str, width: float) -> str:
    while text and _width(pdf, text + "…") > width:
        text = text[:-1]
    return text + "…"


def _midday(day: date) -> datetime:
    return datetime.combine(day, time(12, 0), UTC)

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

from services.notifier.invoice import Invoice

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
        "shipped_with": "Expédiée par",
        "tracking": "suivi",
        "paid": "Facture acquittée : réglée par le client sur ManoMano.",
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
        "shipped_with": "Shipped with",
        "tracking": "tracking",
        "paid": "Paid: settled by the customer on ManoMano.",
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
    text = f"{value:,.2f}"
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

    def money(self, value: Decimal, invoice: Invoice) -> str:
        return format_money(value, invoice.currency, self.language)

    # --- Email -----------------------------------------------------------------------

    def email(self, invoice: Invoice) -> RenderedEmail:
        context: dict[str, Any] = {
            "invoice": invoice,
            "labels": self.labels,
            "total": self.money(invoice.total_incl, invoice),
            "issued_on": format_date(invoice.issued_on, self.language),
        }
        subject = self.labels["subject"].format(number=invoice.number, order=invoice.order_id)
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
        labels = self.labels
        pdf = FPDF(format="A4")
        pdf.set_title(f"{labels['invoice']} {invoice.number}")
        pdf.set_author(invoice.seller.legal_name)
        pdf.set_creator("lengow-orders")
        pdf.set_creation_date(_midday(invoice.issued_on))
        self._choose_font(pdf, invoice)
        pdf.set_auto_page_break(auto=True, margin=28)
        pdf.set_margins(18, 18, 18)
        pdf.add_page()
        width = pdf.w - pdf.l_margin - pdf.r_margin

        # Seller (left) and title block (right).
        top = pdf.get_y()
        pdf.set_font(self._family, "B", 15)
        pdf.set_text_color(*self.ACCENT)
        pdf.cell(width / 2, 8, invoice.seller.legal_name, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font(self._family, "", 9.5)
        pdf.set_text_color(60, 60, 60)
        for line in invoice.seller.address:
            pdf.cell(width / 2, 5, line, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if invoice.seller.email:
            pdf.cell(width / 2, 5, invoice.seller.email, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        seller_bottom = pdf.get_y()

        pdf.set_xy(pdf.l_margin + width / 2, top)
        pdf.set_font(self._family, "B", 22)
        pdf.set_text_color(*self.ACCENT)
        pdf.cell(
            width / 2, 11, labels["invoice"].upper(), align="R", new_x=XPos.LEFT, new_y=YPos.NEXT
        )
        pdf.set_font(self._family, "", 10)
        pdf.set_text_color(30, 30, 30)
        facts = [
            (labels["number"], invoice.number),
            (labels["issued_on"], format_date(invoice.issued_on, self.language)),
            (labels["order"], invoice.order_id),
        ]
        if invoice.order_date is not None:
            facts.append((labels["order_date"], format_date(invoice.order_date, self.language)))
        for label, fact in facts:
            pdf.set_x(pdf.l_margin + width / 2)
            pdf.set_text_color(*self.MUTED)
            pdf.cell(width / 4, 5.5, label, align="R")
            pdf.set_text_color(30, 30, 30)
            pdf.set_font(self._family, "B", 10)
            pdf.cell(width / 4, 5.5, fact, align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.set_font(self._family, "", 10)

        # Customer.
        pdf.set_y(max(seller_bottom, pdf.get_y()) + 8)
        pdf.set_fill_color(244, 246, 250)
        box_top = pdf.get_y()
        customer = invoice.customer
        customer_lines = [
            line for line in (customer.company, *customer.address, customer.email) if line
        ]
        box_height = 9 + 5 * (1 + len(customer_lines))
        pdf.rect(pdf.l_margin, box_top, width / 2, box_height, style="F")
        pdf.set_xy(pdf.l_margin + 4, box_top + 3)
        pdf.set_font(self._family, "B", 8.5)
        pdf.set_text_color(*self.MUTED)
        pdf.cell(0, 5, labels["billed_to"].upper(), new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_font(self._family, "B", 11)
        pdf.set_text_color(30, 30, 30)
        pdf.cell(0, 6, customer.name or "-", new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_font(self._family, "", 10)
        for line in customer_lines:
            pdf.cell(0, 5, line, new_x=XPos.LEFT, new_y=YPos.NEXT)
        pdf.set_y(box_top + box_height + 8)

        # Lines.
        columns = [
            (labels["item"], width * 0.46, "L"),
            (labels["quantity"], width * 0.08, "R"),
            (labels["unit_price"], width * 0.16, "R"),
            (labels["vat_rate"], width * 0.12, "R"),
            (labels["total_excl"], width * 0.18, "R"),
        ]
        pdf.set_font(self._family, "B", 9.5)
        pdf.set_fill_color(*self.ACCENT)
        pdf.set_text_color(255, 255, 255)
        for title, column_width, align in columns:
            pdf.cell(column_width, 8, f" {title} ", align=align, fill=True)
        pdf.ln(8)
        pdf.set_font(self._family, "", 9.5)
        pdf.set_text_color(30, 30, 30)
        for index, item in enumerate(invoice.lines):
            values = [
                item.title,
                str(item.quantity),
                self.money(item.unit_price_excl, invoice),
                format_rate(item.vat_rate, self.language),
                self.money(item.total_excl, invoice),
            ]
            fill = index % 2 == 1
            pdf.set_fill_color(248, 249, 251)
            for (_, column_width, align), cell in zip(columns, values, strict=True):
                text = (
                    cell
                    if pdf.get_string_width(cell) < column_width - 3
                    else (_shorten(pdf, cell, column_width - 5))
                )
                pdf.cell(column_width, 7.5, f" {text} ", align=align, fill=fill)
            pdf.ln(7.5)
        pdf.set_draw_color(*self.ACCENT)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
        pdf.ln(4)

        # VAT breakdown (left) and totals (right).
        totals_top = pdf.get_y()
        pdf.set_font(self._family, "B", 8.5)
        pdf.set_text_color(*self.MUTED)
        pdf.cell(width * 0.15, 5, labels["vat_rate"])
        pdf.cell(width * 0.17, 5, labels["vat_base"], align="R")
        pdf.cell(width * 0.15, 5, labels["vat"], align="R", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font(self._family, "", 9)
        pdf.set_text_color(30, 30, 30)
        for rate, base, vat in invoice.vat_breakdown():
            pdf.cell(width * 0.15, 5, format_rate(rate, self.language))
            pdf.cell(width * 0.17, 5, self.money(base, invoice), align="R")
            pdf.cell(
                width * 0.15,
                5,
                self.money(vat, invoice),
                align="R",
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )

        pdf.set_y(totals_top)
        rows = [
            (labels["total_excl"], invoice.total_excl, False),
            (labels["vat"], invoice.total_vat, False),
            (labels["total_incl"], invoice.total_incl, True),
        ]
        for label, value, strong in rows:
            pdf.set_x(pdf.l_margin + width * 0.55)
            if strong:
                pdf.set_fill_color(*self.ACCENT)
                pdf.set_text_color(255, 255, 255)
                pdf.set_font(self._family, "B", 11.5)
            else:
                pdf.set_text_color(30, 30, 30)
                pdf.set_font(self._family, "", 10)
            pdf.cell(width * 0.25, 8 if strong else 6.5, f" {label}", fill=strong)
            pdf.cell(
                width * 0.20,
                8 if strong else 6.5,
                f"{self.money(value, invoice)} ",
                align="R",
                fill=strong,
                new_x=XPos.LMARGIN,
                new_y=YPos.NEXT,
            )
        pdf.ln(8)

        pdf.set_text_color(30, 30, 30)
        pdf.set_font(self._family, "", 9.5)
        pdf.multi_cell(width, 5, labels["paid"], new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if invoice.carrier:
            shipped = f"{labels['shipped_with']} {invoice.carrier}"
            if invoice.tracking_number:
                shipped += f" ({labels['tracking']} {invoice.tracking_number})"
            pdf.multi_cell(width, 5, shipped + ".", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

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
        pdf.set_auto_page_break(auto=False)  # the footer sits inside the bottom margin
        pdf.set_y(-24)
        pdf.set_draw_color(210, 210, 210)
        pdf.line(pdf.l_margin, pdf.get_y(), pdf.l_margin + width, pdf.get_y())
        pdf.ln(2)
        pdf.set_font(self._family, "", 7.5)
        pdf.set_text_color(*self.MUTED)
        pdf.cell(
            width,
            4,
            " · ".join(identity) + " · " + ", ".join(seller.address),
            align="C",
            new_x=XPos.LMARGIN,
            new_y=YPos.NEXT,
        )
        pdf.cell(width, 4, " · ".join(registration), align="C")
        return bytes(pdf.output())


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
    while text and pdf.get_string_width(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _midday(day: date) -> datetime:
    return datetime.combine(day, time(12, 0), UTC)

"""What one document costs the notifier's CPU: the PDF/A page, the Factur-X XML, and the
whole Factur-X PDF, against the same page with fpdf2's built-in Helvetica (not embedded, so
not PDF/A: the cost of the page before Factur-X, measured in the same run)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date

from fpdf import FPDF

from services.notifier.factur_x import cross_industry_invoice
from services.notifier.invoice import Invoice, build_invoice
from services.notifier.rendering import InvoiceRenderer
from shared.contracts import OrderShipped
from shared.logging import configure_logging
from tests.factories import SELLER, order_shipped
from tests.unit.test_notifier_handlers import notifier, shipped


def _invoice() -> Invoice:
    return build_invoice(
        OrderShipped.model_validate(order_shipped()),
        seller=SELLER,
        number="FA2026-000001",
        issued_on=date(2026, 12, 1),
    )


def _milliseconds(work: Callable[[], object], repeat: int) -> float:
    work()
    start = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - start) / repeat * 1000


def _helvetica_page(invoice: Invoice) -> bytes:
    """A page of the same text in a core font: no font program to subset."""
    pdf = FPDF(format="A4")
    pdf.core_fonts_encoding = "windows-1252"
    pdf.add_page()
    pdf.set_font("helvetica", "", 10)
    y = 20.0
    for line in invoice.lines:
        pdf.text(20, y, f"{line.title} {line.quantity} {line.unit_price_excl} {line.total_excl}")
        y += 7
    for text in (*invoice.seller.address, *invoice.customer.address, invoice.number):
        pdf.text(20, y, text)
        y += 7
    return bytes(pdf.output())


def document_costs(repeat: int) -> dict[str, float]:
    renderer, invoice = InvoiceRenderer(), _invoice()
    wording = renderer.wording(invoice)
    return {
        "helvetica_page": _milliseconds(lambda: _helvetica_page(invoice), repeat),
        "pdfa_page": _milliseconds(lambda: renderer.page(invoice), repeat),
        "xml": _milliseconds(lambda: cross_industry_invoice(invoice, wording), repeat),
        "factur_x": _milliseconds(lambda: renderer.pdf(invoice), repeat),
    }


async def handler_cost(repeat: int) -> float:
    """Milliseconds of the notifier's own work on one invoice, with nothing to wait for: the
    handler on the in-memory store, its email accepted at once by a mail server that does
    nothing (numbering, the Factur-X document, the email composed, every status recorded).
    Each invoice on a store of its own, so the store's size does not count; one renderer, as
    in the notifier; warnings only logged (its two info lines an invoice are not counted)."""
    configure_logging("WARNING", "json")
    renderer = InvoiceRenderer()
    stores = [notifier(renderer) for _ in range(repeat + 1)]
    shipments = [shipped(f"M{index}") for index in range(repeat + 1)]

    async def one(index: int) -> None:
        await stores[index].service.on_order_shipped(shipments[index])

    await one(repeat)  # warm: fonts prepared, schema parsed
    start = time.perf_counter()
    for index in range(repeat):
        await one(index)
    return (time.perf_counter() - start) / repeat * 1000

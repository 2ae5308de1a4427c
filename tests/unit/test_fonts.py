"""The embedded font, prepared once per process: each page gets the smallest cut that holds
what it draws, its text reads back as written, and documents drawn at once in threads (as the
notifier draws them) come out as they do one by one."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from pypdf import PdfReader
from structlog.testing import capture_logs

from services.notifier.fonts import EVERY_SCRIPT, LATIN, FontCut, prepared_fonts
from services.notifier.invoice import Invoice
from services.notifier.labels import LABELS
from services.notifier.rendering import InvoiceRenderer
from tests.unit.test_taxes import invoice_of, shipment

RENDERER = InvoiceRenderer()


def named(name: str) -> Invoice:
    invoice = invoice_of(shipment([{"amount": "100.00", "tax": "16.67"}]))
    return replace(invoice, customer=replace(invoice.customer, name=name))


def embedded_cut(pdf: bytes) -> set[FontCut]:
    """Which prepared cut each embedded font program is, told by its length."""
    lengths = {
        font.objects.font_file.length1: cut  # type: ignore[attr-defined]
        for cut in (LATIN, EVERY_SCRIPT)
        for font in prepared_fonts(cut)
    }
    reader = PdfReader(io.BytesIO(pdf))
    cuts = set()
    for font in reader.pages[0]["/Resources"]["/Font"].values():
        (descendant,) = font.get_object()["/DescendantFonts"]
        program = descendant.get_object()["/FontDescriptor"]["/FontFile2"].get_object()
        cuts.add(lengths[program["/Length1"]])
    return cuts


def text_of(pdf: bytes) -> str:
    return PdfReader(io.BytesIO(pdf)).pages[0].extract_text()


def test_a_latin_page_embeds_the_latin_cut_and_reads_back_as_written() -> None:
    pdf = RENDERER.pdf(named("Zoë Müller-Ñúñez Łukasiewicz"))
    assert embedded_cut(pdf) == {LATIN}
    assert "Zoë Müller-Ñúñez Łukasiewicz" in text_of(pdf)


def test_a_greek_or_cyrillic_name_is_drawn_with_the_cut_that_holds_it() -> None:
    pdf = RENDERER.pdf(named("Ζωή Κοσμά Дмитрий"))
    assert embedded_cut(pdf) == {EVERY_SCRIPT}
    assert "Ζωή Κοσμά Дмитрий" in text_of(pdf)


def test_characters_no_cut_holds_are_left_out_and_said() -> None:
    with capture_logs() as logs:
        pdf = RENDERER.pdf(named("Li 李文 Wen"))
    (said,) = [log for log in logs if log["event"] == "document.characters_left_out"]
    assert said["characters"] == "文李"
    assert "Li  Wen" in text_of(pdf)


def test_every_label_fits_the_latin_cut() -> None:
    """So that a page in any of the languages takes the small cut unless its customer data
    needs more."""
    for language, labels in LABELS.items():
        for key, text in labels.items():
            assert LATIN.holds(set(text)), (language, key, text)


def test_documents_drawn_at_once_in_threads_are_those_drawn_one_by_one() -> None:
    names = ["Camille Martin", "Ζωή Κοσμά", "Jürgen Groß", "Дмитрий", "Ana Núñez"] * 4
    invoices = [replace(named(name), number=f"FA2026-{i:06d}") for i, name in enumerate(names)]
    one_by_one = [RENDERER.pdf(invoice) for invoice in invoices]
    with ThreadPoolExecutor(max_workers=8) as pool:
        at_once = list(pool.map(RENDERER.pdf, invoices))
    assert at_once == one_by_one
    assert len(set(one_by_one)) == len(invoices)

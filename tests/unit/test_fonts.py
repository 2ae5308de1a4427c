"""The embedded font, prepared once per process: each page gets the smallest cut that holds
what it draws, its text reads back as written, and documents drawn at once in threads (as the
notifier draws them) come out as they do one by one."""

from __future__ import annotations

import io
import shutil
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fontTools import ttLib
from pypdf import PdfReader, PdfWriter
from pypdf.generic import NameObject, NumberObject
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
    """Which prepared cut each embedded font is, told by its code-to-glyph map."""
    maps = {
        zlib.decompress(font.objects.cid_to_gid.content_stream()): cut
        for cut in (LATIN, EVERY_SCRIPT)
        for font in prepared_fonts(cut)
    }
    return {maps[descendant["/CIDToGIDMap"].get_object().get_data()] for descendant in fonts(pdf)}


def fonts(pdf: bytes) -> list[Any]:
    reader = PdfReader(io.BytesIO(pdf))
    found = []
    for font in reader.pages[0]["/Resources"]["/Font"].values():
        (descendant,) = font.get_object()["/DescendantFonts"]
        found.append(descendant.get_object())
    return found


def program_of(descendant: Any) -> Any:
    return descendant["/FontDescriptor"]["/FontFile2"].get_object()


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


def whole_program(*, bold: bool) -> bytes:
    """The prepared program as fpdf2 subset it, every glyph of the cut with its outline."""
    font_file = prepared_fonts(LATIN)[1 if bold else 0].objects.font_file
    return zlib.decompress(font_file.content_stream())


def test_each_document_embeds_the_outlines_it_draws_and_no_others() -> None:
    pdf = RENDERER.pdf(named("Camille Martin"))
    for descendant in fonts(pdf):
        program = ttLib.TTFont(io.BytesIO(program_of(descendant).get_data()))
        glyphs = program["glyf"]
        assert glyphs["C"].numberOfContours > 0  # drawn: Camille
        assert glyphs["germandbls"].numberOfContours == 0  # ß: drawn nowhere on this page
        assert len(program_of(descendant).get_data()) < len(whole_program(bold=False))


@pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils (make tools)")
def test_the_page_looks_the_same_as_with_the_whole_font(tmp_path: Path) -> None:
    """Every glyph drawn kept its outline: the page rasterised with the embedded programs
    and with the whole prepared programs put in their place is the same, pixel for pixel."""
    pdf = RENDERER.pdf(named("Zoë Müller-Ñúñez Łukasiewicz"))
    writer = PdfWriter(clone_from=io.BytesIO(pdf))
    for font in writer.pages[0]["/Resources"]["/Font"].values():
        (descendant,) = font.get_object()["/DescendantFonts"]
        bold = "Bold" in str(font.get_object()["/BaseFont"])
        stream = program_of(descendant.get_object())
        program = whole_program(bold=bold)
        stream.set_data(program)
        stream[NameObject("/Length1")] = NumberObject(len(program))
    (tmp_path / "cut.pdf").write_bytes(pdf)
    with (tmp_path / "whole.pdf").open("wb") as out:
        writer.write(out)
    for name in ("cut", "whole"):
        subprocess.run(
            ["pdftoppm", "-r", "100", "-png", "-singlefile", name + ".pdf", name],
            cwd=tmp_path,
            check=True,
        )
    assert (tmp_path / "cut.png").read_bytes() == (tmp_path / "whole.png").read_bytes()

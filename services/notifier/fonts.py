"""The invoices' font, embedded in every PDF as a subset prepared once per process.

PDF/A needs its fonts embedded. Left to itself, fpdf2 parses the TrueType file for each
document, subsets it to the glyphs that document uses, writes the subset and compresses it
again: about 40 ms of the 60 a Factur-X invoice cost, most of the notifier's time. Here the
font is cut once to a :class:`FontCut` (the characters a name, an address or a product title
can be written in), and every glyph of the cut is picked, in a fixed order, before any
document is drawn: each document's subset is then the whole cut with the same codes, so the
PDF objects that describe the font are the same for every document. fpdf2 builds them once,
with its own subsetting (:func:`_harvest`), and each document gets a copy of those objects,
its font program cut to the outlines it drew (:class:`FontProgram`).

Two cuts: :data:`LATIN` (what the four ManoMano countries write in, 15 kB a font, compressed) for
nearly every document, :data:`EVERY_SCRIPT` (Greek and Cyrillic too, 26 kB) for a page that
needs it; the renderer draws with the first and draws again with the second when the page
held a character the first lacks.

fpdf2 has no option for this; :class:`PreparedFontsOutput` replaces its ``_add_fonts`` (the
only step that differs) and is pinned with fpdf2 by the lock file. The documents' read-back
tests check the embedded subsets, and the renders are looked at with pdftoppm.
"""

from __future__ import annotations

import io
import struct
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from copy import copy
from dataclasses import dataclass
from functools import cache
from importlib import resources
from itertools import accumulate
from pathlib import Path

import font_source_sans_pro
from fontTools import subset, ttLib
from fontTools.ttLib.sfnt import SFNTWriter
from fpdf import FPDF
from fpdf.fonts import PDFFontDescriptor, TTFFont
from fpdf.output import (
    OutputProducer,
    PDFExtGState,
    PDFFont,
    PDFFontStream,
    PDFType3Font,
    PDFXObject,
)
from fpdf.pattern import Pattern
from fpdf.syntax import PDFArray, PDFContentStream, PDFObject

_PUNCTUATION = (*range(0x2010, 0x2030), 0x20AC, 0x2116, 0x2122)


@dataclass(frozen=True)
class FontCut:
    """The characters the embedded font is cut to; a character outside every cut is left
    out of the page, as fpdf2 does with a glyph its font lacks."""

    name: str
    characters: frozenset[int]

    def lacks(self, text: set[str]) -> set[str]:
        """The characters of ``text`` this cut has no glyph for."""
        return {character for character in text if ord(character) not in self.characters}

    def holds(self, text: set[str]) -> bool:
        return not self.lacks(text)


#: Latin-1 and Latin Extended-A: French, Spanish, Italian, German, and the other European
#: languages written in Latin letters.
LATIN = FontCut("latin", frozenset([*range(0x20, 0x7F), *range(0xA0, 0x180), *_PUNCTUATION]))
#: Latin with Extended-B, Greek and Cyrillic.
EVERY_SCRIPT = FontCut(
    "every-script",
    frozenset([*range(0x20, 0x7F), *range(0xA0, 0x250), *range(0x370, 0x530), *_PUNCTUATION]),
)
#: Smallest first: the renderer takes the first that holds the page.
CUTS = (LATIN, EVERY_SCRIPT)
FAMILY = "Sans"
STYLES = {"": "Regular", "B": "Bold"}


def _cut(style: str, cut: FontCut, folder: Path) -> Path:
    """Source Sans Pro in ``style``, cut to ``cut``, as a file (fpdf2 reads fonts from
    files)."""
    files = resources.files(font_source_sans_pro).joinpath("files")
    font = ttLib.TTFont(str(files.joinpath(f"SourceSansPro-{style}.ttf")))
    options = subset.Options()
    options.layout_features = []  # the invoices use no ligatures and no kerning
    options.hinting = False
    options.notdef_outline = True
    options.glyph_names = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=cut.characters)
    subsetter.subset(font)
    path = folder / f"SourceSansPro-{style}.ttf"
    font.save(str(path))
    return path


@dataclass(frozen=True)
class FontProgram:
    """The prepared font's TrueType program, taken apart once so that each document embeds
    the outlines it draws and no others: every table as it is but ``glyf`` and ``loca``,
    written again for each document with the other glyphs left empty. Glyph ids stay, so the
    PDF objects describing the font (widths, the code-to-glyph map) stay the same for every
    document. Written here because fontTools' subsetter renumbers glyphs and costs the 40 ms
    this module exists to save; this is slicing bytes (SFNTWriter writes the checksums)."""

    tables: Mapping[str, bytes]
    outlines: tuple[bytes, ...]
    #: Per glyph id: the glyphs its outline is drawn with, itself and its components.
    parts: tuple[frozenset[int], ...]
    glyph_of: Mapping[int, int]

    @classmethod
    def of(cls, program: bytes) -> FontProgram:
        font = ttLib.TTFont(io.BytesIO(program))
        glyf, offsets, order = font.reader["glyf"], font["loca"], font.getGlyphOrder()
        outlines = tuple(
            _padded(glyf[offsets[gid] : offsets[gid + 1]]) for gid in range(len(order))
        )
        components = [
            {font.getGlyphID(c.glyphName) for c in font["glyf"][name].components}
            if font["glyf"][name].isComposite()
            else set()
            for name in order
        ]
        head = font.reader["head"]
        # Long offsets in the loca written per document, whatever the program had.
        kept = [tag for tag in sorted(font.reader.keys()) if tag not in _REWRITTEN]
        tables = {tag: font.reader[tag] for tag in kept}
        tables["head"] = head[:50] + struct.pack(">h", 1) + head[52:]
        cmap = font.getBestCmap()
        return cls(
            tables=tables,
            outlines=outlines,
            parts=tuple(_closure(gid, components) for gid in range(len(order))),
            glyph_of={code: font.getGlyphID(name) for code, name in cmap.items()},
        )

    def cut_to(self, characters: Iterable[str]) -> bytes:
        """The program with the outlines of ``characters`` (and of .notdef) only."""
        used = {0}
        for character in characters:
            glyph = self.glyph_of.get(ord(character))
            if glyph is not None:
                used |= self.parts[glyph]
        kept = [outline if glyph in used else b"" for glyph, outline in enumerate(self.outlines)]
        offsets = [0, *accumulate(map(len, kept))]
        tables = {
            **self.tables,
            "glyf": b"".join(kept),
            "loca": struct.pack(f">{len(offsets)}I", *offsets),
        }
        out = io.BytesIO()
        writer = SFNTWriter(out, len(tables))
        for tag in sorted(tables):
            writer[tag] = tables[tag]
        writer.close()
        return out.getvalue()


_REWRITTEN = ("glyf", "loca", "head")


def _padded(outline: bytes) -> bytes:
    return outline + b"\0" * (-len(outline) % 4)


def _closure(glyph: int, components: list[set[int]]) -> frozenset[int]:
    found, todo = {glyph}, [glyph]
    while todo:
        for part in components[todo.pop()] - found:
            found.add(part)
            todo.append(part)
    return frozenset(found)


class DrawnPDF(FPDF):
    """A document that knows every character drawn on it (its sections add them), so that
    its output embeds only their outlines."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.drawn: set[str] = set()


@dataclass(frozen=True)
class FontObjects:
    """The PDF objects fpdf2 wrote for one font in the prepared document; each document
    adds copies, linked to one another as these are."""

    composite: PDFFont
    descendant: PDFFont
    to_unicode: PDFContentStream
    system_info: PDFObject
    descriptor: PDFFontDescriptor
    cid_to_gid: PDFContentStream
    font_file: PDFContentStream
    program: FontProgram


class PreparedFont(TTFFont):
    """A font with every glyph picked, shared by the documents that draw with it: fpdf2 then
    only reads it (the widths, the codes), never changes it."""

    __slots__ = ("objects",)
    objects: FontObjects


@cache
def prepared_fonts(cut: FontCut) -> tuple[PreparedFont, ...]:
    """The fonts cut to ``cut``, regular then bold, prepared once per process."""
    folder = Path(tempfile.mkdtemp(prefix=f"lengow-orders-fonts-{cut.name}-"))
    pdf = FPDF(format="A4")
    fonts = []
    for style, name in STYLES.items():
        path = _cut(name, cut, folder)
        font = PreparedFont(pdf, path, f"{FAMILY.lower()}{style}", style)
        pdf.fonts[font.fontkey] = font
        for unicode in sorted(font.cmap):
            font.subset.pick(unicode)
        fonts.append(font)
    _harvest(pdf, fonts)
    return tuple(fonts)


def _harvest(pdf: FPDF, fonts: list[PreparedFont]) -> None:
    """fpdf2's own output of a page, keeping the font objects it made."""
    made: dict[int, PDFFont | PDFType3Font] = {}

    class Harvest(OutputProducer):
        def _add_fonts(
            self,
            images: dict[int, PDFXObject],
            states: dict[str, PDFExtGState],
            patterns: dict[str, Pattern],
        ) -> dict[int, PDFFont | PDFType3Font]:
            made.update(super()._add_fonts(images, states, patterns))
            return made

    pdf.add_page()
    pdf.output(output_producer_class=Harvest)
    for font in fonts:
        composite = made[font.i]
        assert isinstance(composite, PDFFont)
        assert composite.descendant_fonts is not None
        assert composite.to_unicode is not None
        descendant = composite.descendant_fonts[0]
        assert isinstance(descendant, PDFFont)
        assert descendant.font_descriptor is not None
        assert descendant.c_i_d_system_info is not None
        assert descendant.c_i_d_to_g_i_d_map is not None
        font.objects = FontObjects(
            composite=composite,
            descendant=descendant,
            # fpdf2 leaves the character map uncompressed; a third of its size compressed.
            to_unicode=PDFContentStream(composite.to_unicode.content_stream(), compress=True),
            system_info=descendant.c_i_d_system_info,
            descriptor=descendant.font_descriptor,
            cid_to_gid=descendant.c_i_d_to_g_i_d_map,
            font_file=(font_file := descendant.font_descriptor.font_file2),  # type: ignore[attr-defined]
            program=FontProgram.of(zlib.decompress(font_file.content_stream())),
        )


def use_prepared_fonts(pdf: FPDF, cut: FontCut) -> None:
    """Give ``pdf`` the fonts prepared for ``cut``, as ``add_font`` would; output it with
    :class:`PreparedFontsOutput`."""
    if pdf.fonts:
        raise ValueError("the prepared fonts go into a document with no font yet")
    for font in prepared_fonts(cut):
        pdf.fonts[font.fontkey] = font


class PreparedFontsOutput(OutputProducer):
    """fpdf2's output, with the prepared fonts' objects copied instead of made again."""

    def _add_fonts(
        self,
        images: dict[int, PDFXObject],
        states: dict[str, PDFExtGState],
        patterns: dict[str, Pattern],
    ) -> dict[int, PDFFont | PDFType3Font]:
        made: dict[int, PDFFont | PDFType3Font] = {}
        for font in sorted(self.fpdf.fonts.values(), key=lambda font: font.i):
            if not isinstance(font, PreparedFont):
                raise TypeError(f"{font.fontkey} is not a prepared font")
            made[font.i] = self._add_copies(font.objects)
        return made

    def _add_copies(self, objects: FontObjects) -> PDFFont:
        """Copies of the font's objects, its program cut to what was drawn when the document
        says (a :class:`DrawnPDF`), else whole."""
        composite, descendant = copy(objects.composite), copy(objects.descendant)
        descriptor, to_unicode = copy(objects.descriptor), copy(objects.to_unicode)
        system_info, cid_to_gid = copy(objects.system_info), copy(objects.cid_to_gid)
        drawn = self.fpdf.drawn if isinstance(self.fpdf, DrawnPDF) else None
        font_file = (
            copy(objects.font_file)
            if drawn is None
            else PDFFontStream(objects.program.cut_to(drawn))
        )
        composite.descendant_fonts = PDFArray([descendant])
        composite.to_unicode = to_unicode
        descendant.c_i_d_system_info = system_info  # type: ignore[assignment]
        descendant.font_descriptor = descriptor
        descendant.c_i_d_to_g_i_d_map = cid_to_gid
        descriptor.font_file2 = font_file  # type: ignore[attr-defined]
        made = (composite, descendant, to_unicode, system_info, descriptor, cid_to_gid, font_file)
        for pdf_object in made:
            self._add_pdf_obj(pdf_object, "fonts")
        return composite

"""The two ManoMano feeds a seller sends through Lengow, checked: ``ordersctl feeds check``.

ManoMano's fulfillment program needs a feed of its own ("ManoMano Fulfillment") beside the
Standard one, with the same structure. Every product of the Fulfillment feed must fill nine
attributes (Lengow's ManoMano Fulfillment page), and no product may be in both feeds:
ManoMano would receive two offers for it.

Catalogue exports come as CSV with a header row, XML or JSON; the format is read from the
content, not the file name. Feeds are read as streams (``csv``, ``ElementTree.iterparse``,
``ijson``): a feed of 200,000 products is checked in flat memory; only the SKUs of the
Standard feed are kept, to find products in both.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

import ijson  # type: ignore[import-untyped]  # no stubs; used as items() only
from defusedxml import ElementTree  # a catalogue is input from outside: no XML bombs

#: The attributes every product of the Fulfillment feed must fill.
FULFILLMENT_ATTRIBUTES = (
    "weight_net",
    "icpe",
    "onu",
    "security_file_number",
    "has_batch_number",
    "has_serial_number",
    "has_dluo",
    "is_fragile",
    "is_overpackaged",
)
FLAGS = tuple(name for name in FULFILLMENT_ATTRIBUTES if name.startswith(("has_", "is_")))
#: How real exports write yes and no (Lengow's and shop exports: French and English, 1/0).
YES = frozenset({"1", "yes", "y", "true", "oui", "o", "vrai"})
NO = frozenset({"0", "no", "n", "false", "non", "faux"})
#: Where the product's SKU is, by the names exports give it.
SKU_FIELDS = ("sku", "id_product", "product_id", "reference", "ref", "id", "ean")
#: Tags that hold one product in an XML export.
XML_PRODUCT_TAGS = frozenset({"product", "item", "offer", "produit"})


@dataclass(frozen=True)
class Problem:
    feed: str
    line: int
    sku: str | None
    attribute: str | None
    message: str


@dataclass(frozen=True)
class Product:
    #: The row (CSV), the product's element (XML) or its index (JSON), from 1.
    line: int
    fields: dict[str, str]

    @property
    def sku(self) -> str | None:
        for name in SKU_FIELDS:
            value = self.fields.get(name)
            if value:
                return value
        return None


def _normalised(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value).strip()


def detect(head: str) -> str:
    """``xml``, ``json`` or ``csv``, from the first characters of the content."""
    start = head.lstrip("\ufeff \t\r\n")
    if start.startswith("<"):
        return "xml"
    if start.startswith(("{", "[")):
        return "json"
    return "csv"


def products(path: Path) -> Iterator[Product]:
    """The feed's products, one at a time, whatever its format."""
    with path.open("rb") as raw:
        head = raw.read(4096).decode("utf-8", errors="replace")
        raw.seek(0)
        kind = detect(head)
        if kind == "xml":
            yield from _xml_products(raw)
        elif kind == "json":
            yield from _json_products(raw, head)
        else:
            yield from _csv_products(raw, head)


def _csv_products(raw: IO[bytes], head: str) -> Iterator[Product]:
    try:
        dialect: Any = csv.Sniffer().sniff(head.split("\n", 1)[0], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
    reader = csv.reader(text, dialect)
    header = [_normalised(name) for name in next(reader, [])]
    for row in reader:
        if any(cell.strip() for cell in row):
            fields = {name: cell.strip() for name, cell in zip(header, row, strict=False)}
            yield Product(reader.line_num, fields)


def _xml_products(raw: IO[bytes]) -> Iterator[Product]:
    index = 0
    for _, element in ElementTree.iterparse(raw, events=("end",)):
        if _normalised(element.tag.rsplit("}", 1)[-1]) not in XML_PRODUCT_TAGS:
            continue
        index += 1
        fields = {_normalised(child.tag.rsplit("}", 1)[-1]): _text(child.text) for child in element}
        fields.update({_normalised(k): _text(v) for k, v in element.attrib.items()})
        element.clear()  # what was read is dropped: memory stays flat
        yield Product(index, fields)


def _json_products(raw: IO[bytes], head: str) -> Iterator[Product]:
    start = head.lstrip("\ufeff \t\r\n")
    if start.startswith("{") and "\n{" in start:  # JSON Lines: one product per line
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace")
        for index, line in enumerate(text, 1):
            if line.strip():
                yield _json_product(index, ijson_line(line))
        return
    prefix = "item" if start.startswith("[") else _json_list_prefix(start)
    for index, item in enumerate(ijson.items(raw, prefix, use_float=True), 1):
        yield _json_product(index, item)


def ijson_line(line: str) -> dict[str, Any]:
    item = next(ijson.items(io.BytesIO(line.encode()), "", use_float=True))
    return item if isinstance(item, dict) else {}


def _json_list_prefix(start: str) -> str:
    """``{"products": [...]}`` and the like: the first key whose value is a list."""
    match = re.search(r'"([^"]+)"\s*:\s*\[', start)
    return f"{match.group(1)}.item" if match else "item"


def _json_product(index: int, item: Any) -> Product:
    if not isinstance(item, dict):
        return Product(index, {})
    return Product(index, {_normalised(str(k)): _text(v) for k, v in item.items()})


def fulfillment_problems(product: Product) -> Iterator[tuple[str, str]]:
    """(attribute, what is wrong) for each mandatory attribute the product does not fill."""
    for name in FULFILLMENT_ATTRIBUTES:
        value = product.fields.get(name, "")
        if not value:
            yield name, "missing"
        elif name == "weight_net":
            try:
                weight = Decimal(value.replace(",", ".").split()[0])
            except (InvalidOperation, IndexError):
                yield name, f"{value!r} is not a weight"
                continue
            if not weight > 0:
                yield name, f"{value!r} is not a positive weight"
        elif name in FLAGS and value.lower() not in YES | NO:
            yield name, f"{value!r} is not yes or no"


class FeedCheck:
    """The two feeds' problems, found as the feeds are read: missing SKUs, SKUs twice in a
    feed, products in both, Fulfillment attributes missing or invalid. Only SKUs are kept
    (to find products in both feeds), never the products themselves."""

    def __init__(self, standard: Path, fulfillment: Path) -> None:
        self._feeds = {"standard": standard, "fulfillment": fulfillment}
        self.products = {"standard": 0, "fulfillment": 0}
        self.problem_count = 0

    def problems(self) -> Iterator[Problem]:
        standard_skus: set[str] = set()
        for problem in self._read("standard", standard_skus, None):
            self.problem_count += 1
            yield problem
        for problem in self._read("fulfillment", set(), standard_skus):
            self.problem_count += 1
            yield problem

    def _read(self, feed: str, skus: set[str], other_feed: set[str] | None) -> Iterator[Problem]:
        for product in products(self._feeds[feed]):
            self.products[feed] += 1
            sku = product.sku
            if sku is None:
                yield Problem(feed, product.line, None, None, "no SKU")
            elif sku in skus:
                yield Problem(feed, product.line, sku, None, f"SKU twice in the {feed} feed")
            else:
                skus.add(sku)
                if other_feed is not None and sku in other_feed:
                    yield Problem(
                        feed,
                        product.line,
                        sku,
                        None,
                        "also in the standard feed: ManoMano would get two offers",
                    )
            if other_feed is not None:  # the Fulfillment feed
                for attribute, message in fulfillment_problems(product):
                    yield Problem(feed, product.line, sku, attribute, message)

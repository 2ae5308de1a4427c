"""``ordersctl feeds check`` on the exports sellers really send: CSV, XML, JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ordersctl.cli import app
from ordersctl.feeds import FeedCheck, Problem, detect

GOOD = {
    "weight_net": "1,25",
    "icpe": "non",
    "onu": "UN1950",
    "security_file_number": "FDS-0042",
    "has_batch_number": "Oui",
    "has_serial_number": "0",
    "has_dluo": "no",
    "is_fragile": "TRUE",
    "is_overpackaged": "n",
}


def csv_feed(path: Path, rows: list[dict[str, str]], delimiter: str = ";") -> Path:
    header = sorted({key for row in rows for key in row})
    lines = [delimiter.join(header)]
    lines += [delimiter.join(row.get(key, "") for key in header) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8-sig")
    return path


def problems(standard: Path, fulfillment: Path) -> list[Problem]:
    return list(FeedCheck(standard, fulfillment).problems())


def test_a_complete_fulfillment_feed_apart_from_the_standard_one_passes(tmp_path: Path) -> None:
    standard = csv_feed(tmp_path / "standard.csv", [{"sku": "A"}, {"sku": "B"}])
    fulfillment = csv_feed(tmp_path / "fulfillment.csv", [{"sku": "C", **GOOD}], ",")
    assert problems(standard, fulfillment) == []


def test_each_problem_names_the_product_the_line_and_the_attribute(tmp_path: Path) -> None:
    standard = csv_feed(tmp_path / "standard.csv", [{"sku": "A"}, {"sku": "B"}, {"sku": "A"}])
    bad = {**GOOD, "weight_net": "0", "is_fragile": "maybe", "onu": ""}
    fulfillment = csv_feed(
        tmp_path / "fulfillment.csv",
        [{"sku": "B", **GOOD}, {"sku": "D", **bad}, {"sku": "", "icpe": "1510"}],
    )
    found = {
        (p.feed, p.line, p.sku, p.attribute, p.message) for p in problems(standard, fulfillment)
    }
    assert ("standard", 4, "A", None, "SKU twice in the standard feed") in found
    assert (
        "fulfillment",
        2,
        "B",
        None,
        "also in the standard feed: ManoMano would get two offers",
    ) in found
    assert ("fulfillment", 3, "D", "weight_net", "'0' is not a positive weight") in found
    assert ("fulfillment", 3, "D", "is_fragile", "'maybe' is not yes or no") in found
    assert ("fulfillment", 3, "D", "onu", "missing") in found
    assert ("fulfillment", 4, None, None, "no SKU") in found
    assert sum(1 for p in found if p[1] == 4 and p[3] is not None) == 8  # all but icpe


def test_xml_and_json_exports_are_read_from_their_content(tmp_path: Path) -> None:
    xml = tmp_path / "standard.export"  # the name says nothing
    xml.write_text(
        '<?xml version="1.0"?><catalog><product><sku>A</sku></product>'
        "<product><sku>C</sku></product></catalog>"
    )
    products = [{"sku": "C", **GOOD}, {"sku": "E", **GOOD, "has_dluo": 1, "weight_net": 2.5}]
    as_json = tmp_path / "fulfillment.export"
    as_json.write_text(json.dumps({"products": products}, indent=2))
    lines = tmp_path / "fulfillment.jsonl"
    lines.write_text("\n".join(json.dumps(p) for p in products) + "\n")
    for fulfillment in (as_json, lines):
        [problem] = problems(xml, fulfillment)
        assert (problem.feed, problem.sku, problem.line) == ("fulfillment", "C", 1)


@pytest.mark.parametrize(
    ("head", "kind"),
    [("\ufeff<?xml", "xml"), ("  [{", "json"), ('{"a"', "json"), ("sku;weight_net", "csv")],
)
def test_the_format_is_detected(head: str, kind: str) -> None:
    assert detect(head) == kind


def test_the_command_exits_1_with_a_summary_and_json_anywhere(tmp_path: Path) -> None:
    standard = csv_feed(tmp_path / "s.csv", [{"sku": "A"}])
    fulfillment = csv_feed(tmp_path / "f.csv", [{"sku": "A", **GOOD}])
    arguments = ["feeds", "check", "--standard", str(standard), "--fulfillment", str(fulfillment)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 1
    assert "fulfillment line 2, A: also in the standard feed" in result.output
    assert "1 standard and 1 fulfillment products, 1 problems" in result.output
    result = CliRunner().invoke(app, ["--json", *arguments])
    assert json.loads(result.output)["summary"] == {
        "products": {"standard": 1, "fulfillment": 1},
        "problems": 1,
    }
    clean = csv_feed(tmp_path / "f2.csv", [{"sku": "Z", **GOOD}])
    ok = CliRunner().invoke(
        app, ["feeds", "check", "--standard", str(standard), "--fulfillment", str(clean)]
    )
    assert ok.exit_code == 0, ok.output

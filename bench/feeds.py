"""``ordersctl feeds check`` on large feeds: seconds and peak memory, against reading the same
file with the bare ``csv`` module (the reference of the same run)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from ordersctl.feeds import FULFILLMENT_ATTRIBUTES

FIELDS = ("sku", "title", "price", *FULFILLMENT_ATTRIBUTES)

#: Run in a process of its own, so that its peak memory is its own.
PROBE = """
import csv, json, sys, time
from pathlib import Path
from ordersctl.feeds import FeedCheck
standard, fulfillment, mode = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
start = time.perf_counter()
if mode == "reference":
    count = 0
    for path in (standard, fulfillment):
        with path.open(newline="") as handle:
            count += sum(1 for _ in csv.reader(handle, delimiter=";"))
    problems = 0
else:
    check = FeedCheck(standard, fulfillment)
    problems = sum(1 for _ in check.problems())
seconds = time.perf_counter() - start
# VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's at fork
peak = next(
    int(line.split()[1]) / 1024
    for line in Path("/proc/self/status").read_text().splitlines()
    if line.startswith("VmHWM:")
)
print(json.dumps({"seconds": seconds, "problems": problems, "peak_mib": peak}))
"""


def write_feeds(folder: Path, products: int) -> tuple[Path, Path]:
    """Two feeds of ``products`` each; one Fulfillment product in a thousand has a problem."""
    standard, fulfillment = (
        folder / f"standard-{products}.csv",
        folder / f"fulfillment-{products}.csv",
    )
    with standard.open("w") as out:
        out.write(";".join(FIELDS) + "\n")
        for index in range(products):
            out.write(f"S{index:07d};Perceuse {index};129,90;;;;;;;;;\n")
    with fulfillment.open("w") as out:
        out.write(";".join(FIELDS) + "\n")
        for index in range(products):
            weight = "0" if index % 1000 == 7 else "1,25"
            out.write(
                f"F{index:07d};Visseuse {index};89,90;{weight};non;UN1950;FDS-1;oui;non;no;0;1\n"
            )
    return standard, fulfillment


async def probe(standard: Path, fulfillment: Path, mode: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PROBE,
        str(standard),
        str(fulfillment),
        mode,
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    result: dict[str, Any] = json.loads(output)
    return result


async def feeds_check(folder: Path, products: int) -> dict[str, Any]:
    standard, fulfillment = write_feeds(folder, products)
    reference = await probe(standard, fulfillment, "reference")
    checked = await probe(standard, fulfillment, "check")
    return {"products": products, "reference": reference, "check": checked}

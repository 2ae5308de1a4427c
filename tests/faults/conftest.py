from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import SmtpSink
from tests.faults.pipeline import Pipeline

#: 2,000 orders as the issue asks; FAULT_ORDERS lowers it for a quick local look.
ORDERS = int(os.environ.get("FAULT_ORDERS", "2000"))
#: How long an outage lasts (the issue says a minute; FAULT_OUTAGE_SECONDS changes it).
OUTAGE = float(os.environ.get("FAULT_OUTAGE_SECONDS", "60"))
#: The issue's 5-minute PostgreSQL and 30-minute SMTP outages, shortened for CI: the services'
#: redelivery pauses are scaled with it, so that the delivery limit outlasts the outage by the
#: margin the defaults give a 30-minute outage (about twice).
LONG_OUTAGE = float(os.environ.get("FAULT_LONG_OUTAGE_SECONDS", "90"))


#: One line of counts per scenario, printed at the end of the run.
REPORTS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("fault scenarios: counts")
        for line in REPORTS:
            terminalreporter.write_line(line)


@pytest.fixture
async def pipeline(
    amqp_url: str, database_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> AsyncIterator[Pipeline]:
    running = Pipeline(amqp_url, database_url, tmp_path, smtp_sink)
    yield running
    await running.stop()

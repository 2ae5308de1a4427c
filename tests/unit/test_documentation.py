"""The documents people read stay true: the AsyncAPI file and the README."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from typer.main import get_command

from devstack.asyncapi import document
from ordersctl.cli import app as ordersctl
from services.notifier.settings import NotifierSettings
from services.poller.settings import PollerSettings
from services.processor.settings import ProcessorSettings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_asyncapi_document_is_current() -> None:
    committed = (ROOT / "docs" / "asyncapi.yaml").read_text()
    assert committed == document(), "docs/asyncapi.yaml is stale: run `make docs`"


def test_asyncapi_document_describes_every_event_and_consumer() -> None:
    text = document()
    for name in [
        "order.changed",
        "order.status_changed",
        "order.shipped",
        "order.transition_rejected",
        "command.accepted",
        "command.rejected",
        "order.action_requested",
        "order.action_succeeded",
        "order.action_failed",
        "invoice.sent",
        "invoice.failed",
        "invoice.held",
        "order.refunded",
        "credit_note.sent",
        "credit_note.failed",
        "processor.order-changed",
        "processor.commands",
        "notifier.order-shipped",
        "notifier.order-refunded",
        "poller.action-requested",
        "poller.sync",
    ]:
        assert f"{name}:" in text, name


def test_every_setting_is_in_the_configuration_table() -> None:
    table = README.split("## Configuration", 1)[1].split("## Operations", 1)[0]
    first_cells = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    documented = {name for cell in first_cells for name in re.findall(r"`([A-Z0-9_]+)`", cell)}
    fields = set()
    for settings in (ProcessorSettings, PollerSettings, NotifierSettings):
        fields |= {name.upper() for name in settings.model_fields}
    assert fields - documented == set(), "settings missing from the README"
    assert documented - fields == set(), "README documents settings that do not exist"


def test_every_make_target_in_the_readme_exists() -> None:
    targets = set(re.findall(r"make ([a-z-]+)", README))
    assert {"run", "test"} <= targets
    listed = subprocess.run(
        ["make", "-pRrq", "-f", "Makefile"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for target in targets:
        assert re.search(rf"^{target}:", listed, re.M), target


def test_every_ordersctl_command_in_the_readme_exists() -> None:
    group = get_command(ordersctl)
    names = set(group.commands)  # type: ignore[attr-defined]
    for used in re.findall(r"ordersctl ([a-z]+)", README):
        assert used in names, used

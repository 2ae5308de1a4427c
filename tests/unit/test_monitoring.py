"""The monitoring profile: the alert rules pass promtool's check and their own unit tests,
every metric the rules and the dashboard name is one the services export, and
docker-compose.yml (every profile) satisfies the Compose Specification's JSON schema."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import services.notifier.metrics
import services.poller.metrics
import services.processor.metrics
import shared.observability
import shared.retention

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
METRIC = re.compile(r"\blengow_orders_[a-z_]+\b")
#: Imported for their metrics, which register when the module loads.
EXPORTERS = (
    services.notifier.metrics,
    services.poller.metrics,
    services.processor.metrics,
    shared.observability,
    shared.retention,
)


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool missing: bash devstack/ensure-tools.sh (Debian's prometheus)"
    return subprocess.run(
        [tool, *args], cwd=MONITORING, capture_output=True, text=True, check=False
    )


def test_the_rules_are_valid() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout


def test_the_rules_fire_when_they_should() -> None:
    tested = promtool("test", "rules", "alerts.test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_test() -> None:
    rules = yaml.safe_load((MONITORING / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load((MONITORING / "alerts.test.yml").read_text())
    tested = {
        case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
    }
    assert alerts == tested


def exported_series() -> set[str]:
    """The names the services' metrics appear under in /metrics."""
    assert EXPORTERS
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        suffixes = {
            "counter": ["_total", "_created"],
            "histogram": ["_bucket", "_sum", "_count", "_created"],
            "gauge": [""],
        }.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def named_in_monitoring() -> set[str]:
    texts = [(MONITORING / "alerts.yml").read_text()]
    dashboard = json.loads((MONITORING / "grafana/dashboards/pipeline.json").read_text())
    texts += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    return {name for text in texts for name in METRIC.findall(text)}


def test_every_metric_the_rules_and_dashboard_name_is_exported() -> None:
    named = named_in_monitoring()
    assert len(named) >= 12
    assert named - exported_series() == set()


def test_the_dashboard_shows_the_pipeline() -> None:
    dashboard = json.loads((MONITORING / "grafana/dashboards/pipeline.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for shown in (
        "lengow_orders_orders",
        "lengow_orders_poll_last_success_timestamp_seconds",
        "lengow_orders_actions_total",
        "lengow_orders_invoices_total",
        "lengow_orders_outbox_oldest_seconds",
        "lengow_orders_orders_by_deadline",
    ):
        assert re.search(rf"\b{shown}\b", exprs), shown
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(tool), "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_compose_file_satisfies_the_compose_specification() -> None:
    checked = check_compose(ROOT / "docker-compose.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_schema_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = (
        (ROOT / "docker-compose.yml")
        .read_text()
        .replace('profiles: ["monitoring"]', "profiles: monitoring", 1)
    )
    (tmp_path / "docker-compose.yml").write_text(broken)
    assert check_compose(tmp_path / "docker-compose.yml").returncode != 0


@pytest.mark.parametrize("mounted", ["prometheus.yml", "alerts.yml", "grafana/provisioning"])
def test_what_compose_mounts_exists(mounted: str) -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    assert f"./monitoring/{mounted}:" in compose
    assert (MONITORING / mounted).exists()

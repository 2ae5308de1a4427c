"""What can be checked of the Docker set-up without a Docker engine."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.notifier.settings import NotifierSettings
from services.poller.settings import PollerSettings
from services.processor.settings import ProcessorSettings

ROOT = Path(__file__).resolve().parents[2]
#: Read by docker compose itself (interpolation, images), not by the services.
COMPOSE_ONLY = {
    "RABBITMQ_USER",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_DEFAULT_USER",
    "RABBITMQ_DEFAULT_PASS",
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "GRAFANA_ADMIN_PASSWORD",
    "GF_SECURITY_ADMIN_PASSWORD",
    "GF_USERS_ALLOW_SIGN_UP",
}
#: Read by the provision service (shared/access.py): the administrator's URLs and each
#: service's password.
PROVISIONING = {
    "AMQP_ADMIN_URL",
    "DATABASE_ADMIN_URL",
    "LENGOW_POLLER_PASSWORD",
    "LENGOW_PROCESSOR_PASSWORD",
    "LENGOW_NOTIFIER_PASSWORD",
    "LENGOW_ORDERSCTL_PASSWORD",
}


def known_variables() -> set[str]:
    names: set[str] = set()
    for settings in (ProcessorSettings, PollerSettings, NotifierSettings):
        names |= {field.upper() for field in settings.model_fields}
    return names


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_service_command_names_a_module_that_exists(compose: dict[str, Any]) -> None:
    commands = {
        name: service["command"]
        for name, service in compose["services"].items()
        if "command" in service and service.get("image") == "lengow-orders:latest"
    }
    assert set(commands) == {"processor", "poller", "notifier", "sandbox", "provision"}
    for name, command in commands.items():
        assert command[:2] == ["python", "-m"], name
        assert importlib.util.find_spec(command[2]) is not None, command


def test_every_variable_set_is_one_the_settings_know(compose: dict[str, Any]) -> None:
    known = known_variables() | COMPOSE_ONLY | PROVISIONING
    for name, service in compose["services"].items():
        for variable in service.get("environment") or {}:
            assert variable in known, f"{name}: {variable} is read by nothing"
    example = (ROOT / ".env.example").read_text()
    for variable in re.findall(r"^([A-Z_]+)=", example, flags=re.MULTILINE):
        assert variable in known, f".env.example: {variable} is read by nothing"


def test_services_wait_for_healthy_infrastructure(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("processor", "poller", "notifier"):
        assert services[name]["depends_on"] == {
            "rabbitmq": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
            "provision": {"condition": "service_completed_successfully"},
        }
        environment = services[name]["environment"]
        assert f"lengow-{name}:" in environment["AMQP_URL"], "its own broker user"
        assert f"lengow_{name}:" in environment["DATABASE_URL"], "its own database role"
        assert "/health/ready" in " ".join(services[name]["healthcheck"]["test"])
        assert "ports" not in services[name], f"{name} must scale: it publishes no port"
    for name in services:
        assert "healthcheck" in services[name], name  # the provision job disables its own
    assert set(compose["volumes"]) == {
        "rabbitmq-data",
        "postgres-data",
        "prometheus-data",
        "grafana-data",
    }


def test_processor_runs_two_replicas_by_default(compose: dict[str, Any]) -> None:
    # The processor's throughput target is met by two replicas (README, Performance).
    assert compose["services"]["processor"]["deploy"]["replicas"] == 2


def test_no_password_has_a_default(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    services = ("LENGOW_POLLER_PASSWORD", "LENGOW_PROCESSOR_PASSWORD", "LENGOW_NOTIFIER_PASSWORD")
    for variable in ("RABBITMQ_PASSWORD", "POSTGRES_PASSWORD", *services):
        assert f"${{{variable}:?" in text
        assert f"${{{variable}:-" not in text
    assert re.search(r"^RABBITMQ_PASSWORD=\s*$", (ROOT / ".env.example").read_text(), re.M)


def test_dockerfile_copies_files_that_exist_and_runs_as_non_root() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.M)

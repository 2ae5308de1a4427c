"""The locked dependency set: every package the project installs, pinned to one version with
the hashes of its files, resolved from ``pyproject.toml`` by uv (``make lock``).

Two files, so that the image carries no test tools: ``requirements.lock`` (what the services
run on, with the build backend that installs the project itself) and
``requirements-dev.lock`` (that, with the same versions, and the development tools). Each
records the digest of the declarations it was resolved from; ``tests/unit/test_lock.py``
fails when ``pyproject.toml`` changed and the locks were not resolved again.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
RUNTIME_LOCK = ROOT / "requirements.lock"
DEV_LOCK = ROOT / "requirements-dev.lock"
PYTHON_VERSION = "3.11"
DIGEST_LINE = "# resolved from pyproject.toml declarations sha256:{digest}"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)", re.MULTILINE)


def declarations(pyproject: Path = PYPROJECT) -> dict[str, list[str]]:
    """What the project declares it needs: to be built, to run, to be developed."""
    data = tomllib.loads(pyproject.read_text())
    return {
        "build": data["build-system"]["requires"],
        "run": data["project"]["dependencies"],
        "dev": data["project"]["optional-dependencies"]["dev"],
        "python": [data["project"]["requires-python"]],
    }


def digest(pyproject: Path = PYPROJECT) -> str:
    canonical = json.dumps(declarations(pyproject), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def recorded_digest(lock: Path) -> str | None:
    pattern = re.escape(DIGEST_LINE).replace(re.escape("{digest}"), "([0-9a-f]{64})")
    found = re.search(pattern, lock.read_text())
    return found.group(1) if found else None


def pins(lock: Path) -> dict[str, str]:
    """Each locked package's normalised name and its version."""
    return {
        re.sub(r"[-_.]+", "-", name).lower(): version
        for name, version in PIN.findall(lock.read_text())
    }


def _compile(output: Path, *options: str) -> None:
    build = "\n".join(declarations()["build"]) + "\n"
    command = [
        sys.executable, "-m", "uv", "pip", "compile", PYPROJECT.name, "-",
        "--generate-hashes", "--universal", "--python-version", PYTHON_VERSION,
        "--custom-compile-command", "make lock", "--quiet", "-o", output.name, *options,
    ]  # fmt: skip
    subprocess.run(command, input=build, text=True, check=True, cwd=ROOT)  # noqa: S603 (our own command)
    with output.open("a") as lock:
        lock.write(DIGEST_LINE.format(digest=digest()) + "\n")


def main() -> None:
    _compile(RUNTIME_LOCK)
    # The runtime lock constrains the dev one: the tests run the versions the image runs.
    _compile(DEV_LOCK, "--extra", "dev", "--constraint", RUNTIME_LOCK.name)


if __name__ == "__main__":
    main()

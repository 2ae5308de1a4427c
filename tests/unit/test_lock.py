"""The locks agree with pyproject.toml: resolved from its current declarations, every declared
requirement pinned within its range, the tests running the versions the image runs, and every
install going through a lock."""

from __future__ import annotations

import shutil
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devstack.lock import (
    DEV_LOCK,
    PYPROJECT,
    ROOT,
    RUNTIME_LOCK,
    declarations,
    digest,
    pins,
    recorded_digest,
)

GROUPS = {RUNTIME_LOCK: ("build", "run"), DEV_LOCK: ("build", "run", "dev")}


def test_the_locks_were_resolved_from_the_current_declarations() -> None:
    for lock in GROUPS:
        assert recorded_digest(lock) == digest(), (
            f"{lock.name} was resolved from other declarations than pyproject.toml's: run make lock"
        )


def test_a_changed_declaration_is_told_apart(tmp_path: Path) -> None:
    changed = tmp_path / "pyproject.toml"
    shutil.copy(PYPROJECT, changed)
    changed.write_text(changed.read_text().replace('"asyncpg>=0.29"', '"asyncpg>=0.31"'))
    assert digest(changed) != digest()


def test_every_declared_requirement_is_pinned_within_its_range() -> None:
    for lock, groups in GROUPS.items():
        pinned = pins(lock)
        for group in groups:
            for text in declarations()[group]:
                requirement = Requirement(text)
                if requirement.marker is not None and not requirement.marker.evaluate():
                    continue
                version = pinned.get(canonicalize_name(requirement.name))
                assert version is not None, f"{requirement.name} is not in {lock.name}"
                assert requirement.specifier.contains(version, prereleases=True), (
                    f"{lock.name} pins {requirement.name}=={version}, outside {requirement}"
                )


def test_the_tests_run_the_versions_the_image_runs() -> None:
    runtime, dev = pins(RUNTIME_LOCK), pins(DEV_LOCK)
    assert {name: dev.get(name) for name in runtime} == runtime


def test_every_install_goes_through_a_lock() -> None:
    """make (and so CI) and the image install from the locks, hashes checked, and the
    project itself without resolving anything more."""
    makefile, dockerfile = (ROOT / "Makefile").read_text(), (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r requirements-dev.lock" in makefile
    assert "--require-hashes -r requirements.lock" in dockerfile
    for text in (makefile, dockerfile):
        assert "--no-deps --no-build-isolation" in text

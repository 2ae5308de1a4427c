from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

from shared.logging import configure_logging
from tests.infrastructure import amqp_server, postgres_server


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    with amqp_server() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture
async def database_url(postgres_url: str) -> AsyncIterator[str]:
    """A database of its own for each test, dropped afterwards."""
    name = f"lengow_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = postgres_url.rpartition("/")
    yield f"{base}/{name}"
    admin = await asyncpg.connect(postgres_url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(autouse=True, scope="session")
def _logging() -> None:
    """Services log through structlog into the standard library, where caplog sees them."""
    configure_logging("DEBUG", "console")

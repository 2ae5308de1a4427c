"""PostgreSQL access: a pool bound to the service's own schema, and numbered migrations.

Each service owns one schema and sets it as the pool's ``search_path``, so its SQL never names
(and never touches) another service's tables.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.logging import get_logger

log = get_logger(__name__)

#: A connection of its own or one borrowed from a pool: both run the same queries.
Connection = asyncpg.Connection | PoolConnectionProxy

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def _check_schema(schema: str) -> str:
    if not _SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"invalid schema name {schema!r}")
    return schema


async def register_json_codecs(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(dsn: str, schema: str, *, max_size: int = 10) -> asyncpg.Pool:
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn,
        min_size=1,
        max_size=max_size,
        init=register_json_codecs,
        server_settings={"search_path": _check_schema(schema)},
    )
    return pool


def _migration_files(package: str) -> list[tuple[str, Traversable]]:
    folder = resources.files(package).joinpath("migrations")
    found = sorted(
        (entry.name, entry) for entry in folder.iterdir() if _MIGRATION_FILE.fullmatch(entry.name)
    )
    return found


async def migrate(conn: asyncpg.Connection, schema: str, package: str) -> list[str]:
    """Apply, in order, the shared messaging migrations and then ``package``'s own ones.

    Safe with several replicas starting at once: an advisory lock lets one migrate at a time.
    Returns the names of the migrations applied now.
    """
    schema = _check_schema(schema)
    applied_now: list[str] = []
    lock_key = f"lengow-orders:migrate:{schema}"
    await conn.execute("SELECT pg_advisory_lock(hashtext($1))", lock_key)
    try:
        # Created only when missing: a service's role owns its schema and may not create one.
        if not await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {schema}.schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            row["name"] for row in await conn.fetch(f"SELECT name FROM {schema}.schema_migrations")
        }
        for origin in ("shared", package):
            for filename, source in _migration_files(origin):
                name = f"{origin}/{filename}"
                if name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL search_path TO {schema}")
                    await conn.execute(source.read_text(encoding="utf-8"))
                    await conn.execute(
                        f"INSERT INTO {schema}.schema_migrations (name) VALUES ($1)", name
                    )
                applied_now.append(name)
                log.info("migration.applied", schema=schema, migration=name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", lock_key)
    return applied_now


async def migrate_dsn(dsn: str, schema: str, package: str) -> list[str]:
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, schema, package)
    finally:
        await conn.close()


def record_to_dict(record: asyncpg.Record | None) -> dict[str, Any] | None:
    return None if record is None else dict(record.items())


async def ensure_database(dsn: str) -> bool:
    """Create the database ``dsn`` names if it does not exist (development set-ups).

    Returns True when it was created.
    """
    base, _, name = dsn.partition("?")[0].rpartition("/")
    try:
        conn: asyncpg.Connection = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    admin: asyncpg.Connection = await asyncpg.connect(f"{base}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        return False
    finally:
        await admin.close()
    log.info("database.created", database=name)
    return True


@asynccontextmanager
async def session_lock(conn: Connection, key: str) -> AsyncIterator[bool]:
    """Try to take the advisory lock ``key`` for as long as the block runs; yields whether it
    was taken. Held by the session, not a transaction, so it spans several transactions and
    outside calls (HTTP, SMTP); a process that dies releases it with its connection."""
    locked = bool(await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1, 0))", key))
    try:
        yield locked
    finally:
        if locked:
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", key)

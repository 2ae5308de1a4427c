"""What every service's read queries share: rows as dicts, none when the service never ran
here (its tables do not exist yet), and table names in the schema the service's settings
name (``*_DB_SCHEMA``), quoted."""

from __future__ import annotations

from typing import Any

import asyncpg

from shared.database import Connection


def table(schema: str, name: str) -> str:
    return f'"{schema.replace(chr(34), chr(34) * 2)}".{name}'


async def rows(conn: Connection, query: str, *args: Any) -> list[dict[str, Any]]:
    try:
        return [dict(row) for row in await conn.fetch(query, *args)]
    except asyncpg.UndefinedTableError:
        return []


async def first(conn: Connection, query: str, *args: Any) -> dict[str, Any] | None:
    found = await rows(conn, query, *args)
    return found[0] if found else None

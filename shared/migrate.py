"""``python -m shared.migrate``: create the database if needed and apply every service's
migrations, each in its own schema (what ``make migrate`` runs; services also migrate at start).
"""

from __future__ import annotations

import asyncio

from shared.database import ensure_database, migrate_dsn
from shared.logging import configure_logging
from shared.settings import ServiceSettings

#: Each service's package and the schema it owns (the services' settings name the same).
SERVICE_SCHEMAS = {
    "services.processor": "processor",
    "services.poller": "poller",
    "services.notifier": "notifier",
}


async def main() -> None:
    settings = ServiceSettings()
    configure_logging(settings.log_level, settings.log_format)
    dsn = settings.database_url.get_secret_value()
    await ensure_database(dsn)
    for package, schema in SERVICE_SCHEMAS.items():
        await migrate_dsn(dsn, schema, package)


if __name__ == "__main__":
    asyncio.run(main())

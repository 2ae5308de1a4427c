"""What ops and sellers look at: what needs action now (``ordersctl attention``) and the daily
reconciliation (``ordersctl report``). Each service's tables are read through its own queries
(``services/*/queries.py``), in the schemas its settings name."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg

from services.notifier.queries import NotifierQueries
from services.poller.queries import PollerQueries
from services.processor.queries import ProcessorQueries
from shared.database import register_json_codecs
from shared.dead_letters import dead_letter_counts
from shared.settings import ServiceSettings
from shared.topology import CONSUMERS

Row = dict[str, Any]


@dataclass(frozen=True)
class Reads:
    processor: ProcessorQueries
    poller: PollerQueries
    notifier: NotifierQueries


def schemas() -> tuple[str, str, str]:
    """The schemas the services' own settings name (PROCESSOR_DB_SCHEMA, ...)."""
    from services.notifier.settings import NotifierSettings
    from services.poller.settings import PollerSettings
    from services.processor.settings import ProcessorSettings

    return (
        ProcessorSettings().processor_db_schema,
        PollerSettings().poller_db_schema,
        NotifierSettings().notifier_db_schema,
    )


@asynccontextmanager
async def reads(settings: ServiceSettings) -> AsyncIterator[Reads]:
    conn: asyncpg.Connection = await asyncpg.connect(settings.database_url.get_secret_value())
    await register_json_codecs(conn)
    processor, poller, notifier = schemas()
    try:
        yield Reads(
            ProcessorQueries(conn, processor),
            PollerQueries(conn, poller),
            NotifierQueries(conn, notifier),
        )
    finally:
        await conn.close()


def _errors(value: Any) -> str:
    if isinstance(value, list):
        return "; ".join(str(item) for item in value) or "(no reason given)"
    return str(value or "(no reason given)")


async def attention(
    settings: ServiceSettings, now: datetime, lead: timedelta, refused_days: float = 7
) -> dict[str, list[Row]]:
    """Everything that waits on a person, grouped, the most urgent group and row first."""
    async with reads(settings) as read:
        deadlines = await read.processor.near_deadlines(now, lead)
        refused = await read.poller.refused_actions(now - timedelta(days=refused_days))
        documents = await read.notifier.failed_documents()
        held = await read.notifier.holds()
        quarantined = await read.poller.quarantined()
    letters = await dead_letter_counts(settings.amqp_url.get_secret_value(), list(CONSUMERS))
    return {
        "deadlines": [
            {
                "marketplace_order_id": row["marketplace_order_id"],
                "deadline": row["deadline"],
                "due_at": row["due_at"],
                "state": "late" if row["due_at"] <= now else "due soon",
                "status": row["lengow_status"],
            }
            for row in deadlines
        ],
        "refused_actions": [
            {
                "marketplace_order_id": row["marketplace_order_id"],
                "action": row["action_type"],
                "command_id": row["command_id"],
                "reason": _errors(row["errors"]),
                "at": row["updated_at"],
            }
            for row in refused
        ],
        "documents": [
            {
                "marketplace_order_id": row["marketplace_order_id"],
                "document": row["kind"],
                "state": row["email_status"],
                "invoice_number": row["invoice_number"],
                "reason": row["last_error"],
            }
            for row in documents
        ]
        + [
            {
                "marketplace_order_id": row["marketplace_order_id"],
                "document": row["document"],
                "state": "held",
                "invoice_number": None,
                "reason": row["reason"],
            }
            for row in held
        ],
        "quarantined_orders": [
            {
                "marketplace_order_id": row["marketplace_order_id"],
                "source": row["source"],
                "kind": row["kind"],
                "reason": row["reason"],
                "since": row["first_seen"],
            }
            for row in quarantined
        ],
        "dead_letters": [
            {"queue": queue, "messages": count} for queue, count in letters.items() if count
        ],
    }


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), UTC)
    return start, start + timedelta(days=1)


async def report(settings: ServiceSettings, day: date, stuck_after: timedelta) -> dict[str, Any]:
    """The reconciliation of ``day`` (UTC): what the polls missed and the catch-up found,
    open orders whose status at Lengow differed from ours (the poller's daily re-read), orders
    stuck in ``refunding`` or ``waiting_shipment``, actions and documents that failed."""
    start, end = day_bounds(day)
    async with reads(settings) as read:
        finds = await read.poller.catchup_finds(start, end)
        stuck = await read.processor.stuck(["refunding", "waiting_shipment"], end - stuck_after)
        refused = await read.poller.refused_actions(start)
        rejected = await read.processor.rejected_commands(start)
        documents = await read.notifier.failed_documents(start)
    return {
        "day": day.isoformat(),
        "found_only_by_the_catchup": [row for row in finds if row["kind"] != "drifted"],
        "status_differed_at_lengow": [row for row in finds if row["kind"] == "drifted"],
        "stuck": [
            {**row, "unchanged_for": str(end - row["source_updated_at"]).split(".")[0]}
            for row in stuck
        ],
        "actions_failed": [
            {**row, "errors": _errors(row["errors"])} for row in refused if row["updated_at"] < end
        ],
        "commands_rejected": [row for row in rejected if row["received_at"] < end],
        "documents_failed": [row for row in documents if row["created_at"] < end],
    }


def report_text(found: dict[str, Any]) -> str:
    """The report as an email body: a count per section, then its rows."""
    lines = [f"lengow-orders reconciliation of {found['day']} (UTC)", ""]
    for section, rows in found.items():
        if section == "day":
            continue
        lines.append(f"{section.replace('_', ' ')}: {len(rows)}")
        for row in rows:
            lines.append("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return "\n".join(lines) + "\n"


async def email_report(found: dict[str, Any], to: str) -> None:
    """Send the report to ``to`` through the notifier's SMTP settings (SMTP_HOST, ...)."""
    from email.message import EmailMessage

    import aiosmtplib

    from services.notifier.settings import NotifierSettings

    smtp = NotifierSettings()
    message = EmailMessage()
    message["From"] = smtp.mail_from
    message["To"] = to
    total = sum(len(rows) for key, rows in found.items() if key != "day")
    message["Subject"] = f"lengow-orders: reconciliation of {found['day']}, {total} to look at"
    message.set_content(report_text(found))
    password = smtp.smtp_password.get_secret_value() if smtp.smtp_password else None
    await aiosmtplib.send(
        message,
        hostname=smtp.smtp_host,
        port=smtp.smtp_port,
        username=smtp.smtp_username or None,
        password=password or None,
        use_tls=smtp.smtp_security == "tls",
        start_tls=smtp.smtp_security == "starttls",
        timeout=smtp.smtp_timeout_seconds,
    )

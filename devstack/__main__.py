"""``python -m devstack``: run the sandbox and every service locally until Ctrl-C.

Each process's output is prefixed with its name; every ``--progress`` seconds a summary of the
orders by status is printed. Any setting can be overridden by the environment: pointing the
pipeline at a real Lengow account is configuration (``LENGOW_API_URL``, ``LENGOW_SOURCES``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets as secrets_module
import shutil
import signal
import sys
from pathlib import Path

import asyncpg

from ordersctl.operations import schemas
from services.notifier.queries import NotifierQueries
from services.processor.queries import ProcessorQueries
from shared.access import ORDERSCTL, SERVICES, provision_locally
from shared.database import ensure_database
from shared.settings import ServiceSettings

SANDBOX_PORT = 8700
SMTP_PORT = 8025
EMAILS_FOLDER = "var/emails"
#: ordersctl's own (read-only) credentials for this run.
ORDERSCTL_ENV = "var/ordersctl.env"
SANDBOX_SOURCE = {
    "name": "ManoMano Standard (sandbox)",
    "account_id": 1000,
    "marketplace": "manomano_fr",
    "access_token": "sandbox-access-token",
    "secret": "sandbox-secret",
}

#: Demo defaults; anything already in the environment wins.
DEMO_ENVIRONMENT = {
    "LENGOW_API_URL": f"http://127.0.0.1:{SANDBOX_PORT}",
    "LENGOW_SOURCES": json.dumps([SANDBOX_SOURCE]),
    "POLL_INTERVAL_SECONDS": "15",
    "SMTP_HOST": "127.0.0.1",
    "SMTP_PORT": str(SMTP_PORT),
    "LOG_FORMAT": "console",
}

OPS_PORTS = {"processor": 9101, "poller": 9102, "notifier": 9103}

COLOURS = {"sandbox": "35", "smtp": "34", "processor": "36", "poller": "33", "notifier": "32"}


def processes(use_sandbox: bool) -> dict[str, list[str]]:
    python = sys.executable
    found = {
        "processor": [python, "-m", "services.processor"],
        "notifier": [python, "-m", "services.notifier"],
        "poller": [python, "-m", "services.poller"],
    }
    if use_sandbox:
        found = {
            "sandbox": [python, "-m", "sandbox", "--port", str(SANDBOX_PORT)],
            "smtp": [
                python,
                "-m",
                "sandbox.smtp",
                "--port",
                str(SMTP_PORT),
                "--folder",
                EMAILS_FOLDER,
            ],
            **found,
        }
    return found


async def relay_output(name: str, stream: asyncio.StreamReader) -> None:
    colour = COLOURS.get(name, "0")
    prefix = f"\033[{colour}m{name:>9} |\033[0m " if sys.stdout.isatty() else f"{name:>9} | "
    while line := await stream.readline():
        sys.stdout.write(prefix + line.decode(errors="replace"))
        sys.stdout.flush()


async def report_progress(dsn: str, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            conn = await asyncpg.connect(dsn)
        except Exception as exc:  # the database may still be starting
            print(f" progress | database not reachable yet: {exc}", flush=True)
            continue
        processor, _, notifier = schemas()
        try:
            rows = await ProcessorQueries(conn, processor).status_counts()
            mails = await NotifierQueries(conn, notifier).document_counts()
        finally:
            await conn.close()
        summary = ", ".join(f"{r['lengow_status']} {r['n']}" for r in rows) or "none yet"
        invoices = (
            ", ".join(f"{r['kind'].replace('_', ' ')} {r['email_status']} {r['n']}" for r in mails)
            or "none yet"
        )
        print(f" progress | orders by status: {summary} | documents: {invoices}", flush=True)


async def own_credentials(env: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each service's AMQP_URL and DATABASE_URL as its own user and role, freshly provisioned
    with random passwords (shared/access.py); ordersctl's are written to ORDERSCTL_ENV. Empty
    when the broker is not local (no rabbitmqctl): then everything runs as the configured
    user."""
    if shutil.which("rabbitmqctl") is None:
        print(" devstack | no rabbitmqctl here: every service uses AMQP_URL's user", flush=True)
        return {}
    admin = ServiceSettings()
    amqp, database = admin.amqp_url.get_secret_value(), admin.database_url.get_secret_value()
    await ensure_database(database)
    secrets = {name: secrets_module.token_hex(16) for name in [*SERVICES, ORDERSCTL]}
    urls = await provision_locally(secrets, amqp, database)
    await asyncio.to_thread(write_private, Path(ORDERSCTL_ENV), urls[ORDERSCTL])
    return urls


def write_private(path: Path, values: dict[str, str]) -> None:
    """Secrets on disk for this machine's user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()), "utf-8")


async def main(args: argparse.Namespace) -> int:
    env = {**DEMO_ENVIRONMENT, **os.environ} if args.sandbox else dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    credentials = await own_credentials(env)
    children: dict[str, asyncio.subprocess.Process] = {}
    for name, command in processes(args.sandbox).items():
        children[name] = await asyncio.create_subprocess_exec(
            *command,
            env={**env, **credentials.get(name, {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        if name in ("sandbox", "smtp"):
            await asyncio.sleep(0.5)  # let it bind its port before the services call it
    pipes = [
        asyncio.create_task(relay_output(name, child.stdout))
        for name, child in children.items()
        if child.stdout is not None
    ]
    dsn = ServiceSettings().database_url.get_secret_value()
    progress = asyncio.create_task(report_progress(dsn, args.progress))
    print(
        "lengow-orders is running: "
        + (
            f"Lengow sandbox on http://127.0.0.1:{SANDBOX_PORT}, invoice emails in"
            f" {EMAILS_FOLDER}/ (SMTP sink on 127.0.0.1:{SMTP_PORT}), "
            if args.sandbox
            else ""
        )
        + "RabbitMQ exchanges orders.events / orders.commands.\n"
        + "".join(
            f"  {name:<9} http://127.0.0.1:{port}/health/ready  http://127.0.0.1:{port}/metrics\n"
            for name, port in OPS_PORTS.items()
        )
        + "  ops CLI   .venv/bin/ordersctl list | show ORDER | accept ORDER | ...\n"
        + (
            f"            as its own read-only user: env $(cat {ORDERSCTL_ENV})"
            " .venv/bin/ordersctl list\n"
            if credentials
            else ""
        )
        + "Ctrl-C stops everything.",
        flush=True,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    exited = [asyncio.create_task(child.wait()) for child in children.values()]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([stopper, *exited], return_when=asyncio.FIRST_COMPLETED)
    failed = [name for name, child in children.items() if child.returncode not in (None, 0)]
    if failed:
        print(f"stopping: {', '.join(failed)} exited with an error", flush=True)

    progress.cancel()
    for child in reversed(list(children.values())):
        if child.returncode is None:
            child.send_signal(signal.SIGTERM)
    for child in children.values():
        try:
            await asyncio.wait_for(child.wait(), timeout=20)
        except TimeoutError:
            child.kill()
    for pipe in pipes:
        with contextlib.suppress(Exception):
            await pipe
    print("lengow-orders stopped.", flush=True)
    return 1 if failed else 0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--no-sandbox",
        dest="sandbox",
        action="store_false",
        help="use the Lengow account configured in the environment instead of the sandbox",
    )
    parser.add_argument("--progress", type=float, default=10.0, help="seconds between summaries")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))

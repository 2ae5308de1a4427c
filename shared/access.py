"""Who may do what: one broker user and one PostgreSQL role per service, and a read-only
pair for ``ordersctl``, each limited to what it uses. ``python -m shared.access`` applies it
with the administrator's credentials (``make run`` does, compose's ``provision`` service
does); the services then log in as themselves.

Broker (RabbitMQ permissions are regular expressions over names, ``configure`` /
``write`` / ``read``; topic permissions restrict routing keys on a topic exchange):

- every service declares the whole topology at start (so no event is ever published before
  its queue exists), so each may configure the topology's own names, and bind (write on the
  queues, read on the exchanges); no other name. RabbitMQ lets a user declare a queue with a
  dead-letter exchange only if it may read that queue, so each service may read every queue
  of the pipeline (it consumes only its own; the broker does not forbid the others): what
  is enforced is who may *publish* what;
- each service publishes events only with the routing keys of the events it emits (only the
  poller may publish ``order.changed``, only the processor ``order.shipped``), and dead
  letters; the processor alone writes to the default exchange (replies to callers);
- ``ordersctl`` publishes commands only, reads its reply queue and the dead-letter queues.
  Replaying dead letters onto the event bus takes an operator's user (the administrator),
  not ``ordersctl``'s.

PostgreSQL: each service's role owns its schema (created by it, migrated by it) and nothing
else; ``ordersctl``'s role reads the three schemas and writes nothing. None is a superuser.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import asyncpg
from yarl import URL

from shared.contracts import EventType
from shared.topology import COMMANDS, CONSUMERS, DEAD_LETTERS, EVENTS

SERVICES = ("poller", "processor", "notifier")
ORDERSCTL = "ordersctl"

#: The events each service emits: the topic permission on orders.events, and what the
#: service's AsyncAPI document declares.
EMITS: dict[str, tuple[EventType, ...]] = {
    "poller": (
        EventType.ORDER_CHANGED,
        EventType.ORDER_ACTION_SUCCEEDED,
        EventType.ORDER_ACTION_FAILED,
        EventType.MARKETPLACE_RULES_CHANGED,
    ),
    "processor": (
        EventType.ORDER_STATUS_CHANGED,
        EventType.ORDER_SHIPPED,
        EventType.ORDER_REFUNDED,
        EventType.ORDER_TRANSITION_REJECTED,
        EventType.COMMAND_ACCEPTED,
        EventType.COMMAND_REJECTED,
        EventType.ORDER_ACTION_REQUESTED,
        EventType.ORDER_LINK_REQUESTED,
        EventType.ORDER_DEADLINE_APPROACHING,
        EventType.ORDER_DEADLINE_MISSED,
    ),
    "notifier": (
        EventType.INVOICE_SENT,
        EventType.INVOICE_FAILED,
        EventType.INVOICE_HELD,
        EventType.CREDIT_NOTE_SENT,
        EventType.CREDIT_NOTE_FAILED,
        EventType.COMMAND_ACCEPTED,
        EventType.COMMAND_REJECTED,
    ),
}


def broker_user(service: str) -> str:
    return f"lengow-{service}"


def database_role(service: str) -> str:
    return f"lengow_{service}"


def _exactly(names: Sequence[str]) -> str:
    return "^(" + "|".join(re.escape(name) for name in sorted(names)) + ")$"


#: Nothing: a regular expression no name matches.
NOTHING = "^$"


@dataclass(frozen=True)
class BrokerGrant:
    user: str
    configure: str
    write: str
    read: str
    #: Per topic exchange: (write, read) patterns over routing keys.
    topics: dict[str, tuple[str, str]] = field(default_factory=dict)


def broker_grants() -> list[BrokerGrant]:
    queues = [*CONSUMERS, *(queue.dead_letters for queue in CONSUMERS.values())]
    exchanges = [EVENTS.name, COMMANDS.name, DEAD_LETTERS.name]
    grants = []
    for service in SERVICES:
        publishes = [EVENTS.name, DEAD_LETTERS.name]
        if service in ("processor", "notifier"):
            publishes.append("amq.default")  # replies to a caller's queue
        events = _exactly([event.value for event in EMITS[service]])
        grants.append(
            BrokerGrant(
                broker_user(service),
                configure=_exactly([*queues, *exchanges]),
                write=_exactly([*publishes, *queues]),
                read=_exactly([*queues, *exchanges]),
                topics={EVENTS.name: (events, ".*"), COMMANDS.name: (NOTHING, ".*")},
            )
        )
    grants.append(
        BrokerGrant(
            broker_user(ORDERSCTL),
            configure=r"^amq\.gen-.*$",
            write=_exactly([COMMANDS.name]),
            read=r"^(amq\.gen-.*|.*\.dlq)$",
            topics={COMMANDS.name: (r"^(order\..+|invoice\..+|poller\.sync)$", NOTHING)},
        )
    )
    return grants


def rabbitmqctl_commands(passwords: dict[str, str], vhost: str = "/") -> list[list[str]]:
    """The same grants as ``rabbitmqctl`` invocations (a local broker)."""
    commands: list[list[str]] = []
    for grant in broker_grants():
        commands.append(["add_user", grant.user, passwords[grant.user]])
        commands.append(["change_password", grant.user, passwords[grant.user]])
        commands.append(
            ["set_permissions", "-p", vhost, grant.user, grant.configure, grant.write, grant.read]
        )
        for exchange, (write, read) in grant.topics.items():
            commands.append(
                ["set_topic_permissions", "-p", vhost, grant.user, exchange, write, read]
            )
    return commands


def provision_with_rabbitmqctl(passwords: dict[str, str], vhost: str = "/") -> None:
    for command in rabbitmqctl_commands(passwords, vhost):
        result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
            ["rabbitmqctl", "-q", *command],  # noqa: S607 - the broker's own tool, on PATH
            capture_output=True,
            text=True,
        )
        # add_user of an existing user fails: change_password then sets the password.
        if result.returncode != 0 and command[0] != "add_user":
            raise RuntimeError(f"rabbitmqctl {command[0]} {command[1]}: {result.stderr.strip()}")


async def provision_with_http_api(
    api_url: str, admin: aiohttp.BasicAuth, passwords: dict[str, str], vhost: str = "/"
) -> None:
    """The same grants through RabbitMQ's management API (compose's broker)."""
    base = URL(api_url)
    quoted = vhost.replace("/", "%2F")
    async with aiohttp.ClientSession(auth=admin, raise_for_status=True) as http:
        for grant in broker_grants():
            await http.put(
                base / "api/users" / grant.user,
                json={"password": passwords[grant.user], "tags": ""},
            )
            await http.put(
                URL(f"{base}/api/permissions/{quoted}/{grant.user}", encoded=True),
                json={"configure": grant.configure, "write": grant.write, "read": grant.read},
            )
            for exchange, (write, read) in grant.topics.items():
                await http.put(
                    URL(f"{base}/api/topic-permissions/{quoted}/{grant.user}", encoded=True),
                    json={"exchange": exchange, "write": write, "read": read},
                )


def database_statements(database: str, passwords: dict[str, str]) -> list[str]:
    """Roles, schemas and grants (idempotent); run by an administrator."""
    reader = database_role(ORDERSCTL)
    statements = []
    for role in [*(database_role(s) for s in SERVICES), reader]:
        password = passwords[role].replace("'", "''")
        statements.append(
            "DO $$ BEGIN"
            f" IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
            f" CREATE ROLE {role} LOGIN; END IF; END $$"
        )
        statements.append(
            f"ALTER ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '{password}'"
        )
        statements.append(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
    for service in SERVICES:
        owner = database_role(service)
        statements += [
            f"CREATE SCHEMA IF NOT EXISTS {service} AUTHORIZATION {owner}",
            f"ALTER SCHEMA {service} OWNER TO {owner}",
            # Tables an earlier, single-user install created pass to the service's role.
            "DO $$ DECLARE t record; BEGIN"
            f" FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = '{service}' LOOP"
            f" EXECUTE format('ALTER TABLE {service}.%I OWNER TO {owner}', t.tablename);"
            " END LOOP; END $$",
            f"GRANT USAGE ON SCHEMA {service} TO {reader}",
            f"GRANT SELECT ON ALL TABLES IN SCHEMA {service} TO {reader}",
            f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {service}"
            f" GRANT SELECT ON TABLES TO {reader}",
        ]
    return statements


async def provision_database(admin_dsn: str, passwords: dict[str, str]) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        database = await conn.fetchval("SELECT current_database()")
        for statement in database_statements(database, passwords):
            await conn.execute(statement)
    finally:
        await conn.close()


def login_passwords(secrets: dict[str, str]) -> dict[str, str]:
    """Each name's one secret (poller, processor, notifier, ordersctl) as the password of its
    broker user and of its database role."""
    passwords: dict[str, str] = {}
    for name, secret in secrets.items():
        passwords[broker_user(name)] = passwords[database_role(name)] = secret
    return passwords


def passwords_from_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``LENGOW_<NAME>_PASSWORD`` (poller, processor, notifier, ordersctl), one password per
    service for its broker user and its database role."""
    environ = dict(os.environ if environ is None else environ)
    secrets: dict[str, str] = {}
    for name in [*SERVICES, ORDERSCTL]:
        variable = f"LENGOW_{name.upper()}_PASSWORD"
        if not environ.get(variable):
            raise SystemExit(f"{variable} is not set")
        secrets[name] = environ[variable]
    return login_passwords(secrets)


async def provision_locally(
    secrets: dict[str, str], amqp_admin_url: str, database_admin_url: str
) -> dict[str, dict[str, str]]:
    """Provision every user and role on this machine's broker (rabbitmqctl) and the database
    with ``secrets`` (one per name); returns each name's AMQP_URL and DATABASE_URL."""
    passwords = login_passwords(secrets)
    await asyncio.to_thread(provision_with_rabbitmqctl, passwords)
    await provision_database(database_admin_url, passwords)
    return {
        name: service_urls(name, secret, amqp_admin_url, database_admin_url)
        for name, secret in secrets.items()
    }


def service_urls(
    name: str, password: str, amqp_admin_url: str, database_admin_url: str
) -> dict[str, str]:
    """A service's AMQP_URL and DATABASE_URL: the administrator's, with its own user."""
    amqp = URL(amqp_admin_url).with_user(broker_user(name)).with_password(password)
    database = URL(database_admin_url).with_user(database_role(name)).with_password(password)
    return {"AMQP_URL": str(amqp), "DATABASE_URL": str(database)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amqp-admin-url", default=os.environ.get("AMQP_ADMIN_URL"))
    parser.add_argument("--database-admin-url", default=os.environ.get("DATABASE_ADMIN_URL"))
    parser.add_argument(
        "--broker-api", help="management API URL (else rabbitmqctl on this machine)"
    )
    args = parser.parse_args()
    passwords = passwords_from_environment()
    if args.database_admin_url:
        asyncio.run(provision_database(args.database_admin_url, passwords))
    if args.broker_api:
        admin = URL(args.amqp_admin_url or "amqp://guest:guest@localhost/")
        auth = aiohttp.BasicAuth(admin.user or "guest", admin.password or "")
        asyncio.run(provision_with_http_api(args.broker_api, auth, passwords))
    elif shutil.which("rabbitmqctl"):
        provision_with_rabbitmqctl(passwords)
    else:
        print("no --broker-api and no rabbitmqctl: broker users not provisioned", file=sys.stderr)
        return 1
    print("provisioned: " + ", ".join(g.user for g in broker_grants()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

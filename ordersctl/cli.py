"""``ordersctl``: drive and inspect orders from a terminal, like any other service does.

Commands go onto the bus and the answer is awaited; reads come from the services' schemas.
Exit codes: 0 done (command accepted), 1 refused (command rejected, order unknown),
2 wrong usage, 3 no answer or a server unreachable.
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Coroutine
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from ordersctl.feeds import FeedCheck
from ordersctl.operations import attention as attention_of
from ordersctl.operations import email_report, reads
from ordersctl.operations import report as report_of
from shared.command_client import NoAnswerError, publish_command, send_command
from shared.contracts import CommandType, EventType
from shared.dead_letters import list_dead_letters, replay_dead_letters
from shared.settings import ServiceSettings
from shared.topology import dead_letters_of

T = TypeVar("T")

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False)
dlq = typer.Typer(help="Dead-letter queues: what was refused, and replaying it.")
app.add_typer(dlq, name="dlq")
invoice = typer.Typer(help="Invoices, through the notifier: release a held one, send, resend.")
app.add_typer(invoice, name="invoice")
feeds = typer.Typer(help="The catalogue feeds sent through Lengow (Standard and Fulfillment).")
app.add_typer(feeds, name="feeds")
console = Console()
errors = Console(stderr=True)


class ExitCode(IntEnum):
    OK = 0
    REFUSED = 1
    USAGE = 2
    UNAVAILABLE = 3


class State:
    as_json = False
    marketplace = "manomano_fr"
    timeout = 30.0


state = State()

MarketplaceOption = Annotated[str, typer.Option(help="Lengow marketplace code.")]


@app.callback()
def main(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    marketplace: MarketplaceOption = "manomano_fr",
    timeout: Annotated[float, typer.Option(help="Seconds to wait for an answer.")] = 30.0,
) -> None:
    state.as_json = as_json
    state.marketplace = marketplace
    state.timeout = timeout


def settings() -> ServiceSettings:
    return ServiceSettings()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coroutine)
    except NoAnswerError as exc:
        errors.print(f"[red]{exc}[/red]")
        raise typer.Exit(ExitCode.UNAVAILABLE) from None
    except (OSError, asyncpg.PostgresError, ConnectionError) as exc:
        errors.print(f"[red]unreachable: {type(exc).__name__}: {exc}[/red]")
        raise typer.Exit(ExitCode.UNAVAILABLE) from None


def emit(data: Any, human: str | Table) -> None:
    if state.as_json:
        console.print_json(json.dumps(data, default=str))
    else:
        console.print(human)


# --- Commands ------------------------------------------------------------------------------


def _command(type_: CommandType, order_id: str, command_id: str | None, **fields: Any) -> None:
    data = {
        "command_id": command_id or f"ordersctl-{uuid.uuid4()}",
        "marketplace": state.marketplace,
        "marketplace_order_id": order_id,
        **{key: value for key, value in fields.items() if value is not None},
    }
    try:
        answer = run(
            send_command(
                settings().amqp_url.get_secret_value(),
                type_,
                data,
                source="ordersctl",
                answer_within=state.timeout,
            )
        )
    except typer.Exit:
        # No answer: the command may still be carried out. Its id is the way to ask again
        # without doing it twice.
        errors.print(
            f"command {data['command_id']} may still be carried out: run the same command"
            f" again with --command-id {data['command_id']} to learn its outcome (it is never"
            " done twice)"
        )
        raise
    accepted = answer.type == EventType.COMMAND_ACCEPTED
    number = answer.data.get("invoice_number")
    detail = f", invoice {number}: email {answer.data.get('email_status')}" if number else ""
    text = (
        f"[green]accepted[/green]: {type_} {order_id} (command {data['command_id']}{detail})"
        if accepted
        else f"[red]rejected[/red]: {answer.data.get('reason')}"
    )
    emit(answer.model_dump(mode="json"), text)
    raise typer.Exit(ExitCode.OK if accepted else ExitCode.REFUSED)


CommandId = Annotated[
    str | None, typer.Option(help="Idempotency key; the same key is answered the same way.")
]


@feeds.command("check")
def feeds_check(
    standard: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Standard feed.")],
    fulfillment: Annotated[
        Path, typer.Option(exists=True, dir_okay=False, help="Fulfillment feed.")
    ],
) -> None:
    """Every product of the Fulfillment feed fills its nine mandatory attributes, and none is
    in both feeds (CSV, XML or JSON, read from the content). Exit code 1 on any problem."""
    check = FeedCheck(standard, fulfillment)
    if state.as_json:
        problems = [asdict(problem) for problem in check.problems()]
        summary = {"products": check.products, "problems": len(problems)}
        console.print_json(json.dumps({"problems": problems, "summary": summary}))
    else:
        for problem in check.problems():
            where = f"{problem.feed} line {problem.line}"
            product = problem.sku or "(no SKU)"
            attribute = f" {problem.attribute}:" if problem.attribute else ""
            console.print(f"{where}, {product}:{attribute} {problem.message}", markup=False)
        console.print(
            f"{check.products['standard']} standard and {check.products['fulfillment']}"
            f" fulfillment products, {check.problem_count} problems"
        )
    raise typer.Exit(ExitCode.REFUSED if check.problem_count else ExitCode.OK)


@invoice.command("release")
def invoice_release(order_id: str, command_id: CommandId = None) -> None:
    """Issue a held invoice, once its data or the settings allow it (then its credit notes)."""
    _command(CommandType.INVOICE_RELEASE, order_id, command_id)


@invoice.command("send")
def invoice_send(order_id: str, command_id: CommandId = None) -> None:
    """Email an invoice kept on request (INVOICE_MODE=on_request), once."""
    _command(CommandType.INVOICE_SEND, order_id, command_id)


@invoice.command("resend")
def invoice_resend(order_id: str, command_id: CommandId = None) -> None:
    """Email the archived invoice again: the same number and PDF."""
    _command(CommandType.INVOICE_RESEND, order_id, command_id)


@app.command()
def accept(order_id: str, command_id: CommandId = None) -> None:
    """Accept an order waiting for acceptance."""
    _command(CommandType.ACCEPT, order_id, command_id)


@app.command()
def refuse(order_id: str, command_id: CommandId = None) -> None:
    """Refuse an order waiting for acceptance."""
    _command(CommandType.REFUSE, order_id, command_id)


@app.command()
def ship(
    order_id: str,
    carrier: Annotated[str, typer.Option(help='A carrier of the list, or "Other".')],
    carrier_name: Annotated[str | None, typer.Option(help="With Other: the carrier.")] = None,
    tracking_number: Annotated[str | None, typer.Option()] = None,
    tracking_url: Annotated[str | None, typer.Option(help="With Other: mandatory.")] = None,
    command_id: CommandId = None,
) -> None:
    """Confirm the shipment of an order waiting for shipment."""
    _command(
        CommandType.SHIP,
        order_id,
        command_id,
        carrier=carrier,
        carrier_name=carrier_name,
        tracking_number=tracking_number,
        tracking_url=tracking_url,
    )


@app.command()
def refund(
    order_id: str,
    reason: Annotated[str, typer.Option(help="refund_reason, from the accepted values.")],
    shipping_fees: Annotated[
        bool, typer.Option("--shipping-fees/--no-shipping-fees", help="refund_shipping_fees.")
    ],
    command_id: CommandId = None,
) -> None:
    """Refund a shipped order."""
    _command(
        CommandType.REFUND,
        order_id,
        command_id,
        refund_reason=reason,
        refund_shipping_fees=shipping_fees,
    )


@app.command()
def quarantine() -> None:
    """Orders Lengow returned that could not be read: the reason, read again at every poll."""

    async def fetch() -> list[dict[str, Any]]:
        async with reads(settings()) as read:
            return await read.poller.quarantined()

    rows = run(fetch())
    emit(rows, _table(f"{len(rows)} orders in quarantine", rows))


@app.command()
def link(
    order_id: str,
    merchant_order_id: Annotated[str, typer.Argument(help="The shop's or ERP's id.")],
    command_id: CommandId = None,
) -> None:
    """Write another system's id for the order back to Lengow (its merchant order id)."""
    _command(CommandType.LINK, order_id, command_id, merchant_order_id=merchant_order_id)


@app.command()
def sync(
    catchup: Annotated[bool, typer.Option(help="The 3-day catch-up window.")] = False,
    source: Annotated[str | None, typer.Option(help="One source; all when omitted.")] = None,
) -> None:
    """Ask the poller to poll Lengow now."""
    sent = run(
        publish_command(
            settings().amqp_url.get_secret_value(),
            CommandType.SYNC,
            {"catchup": catchup, "source": source},
            source="ordersctl",
        )
    )
    emit(sent.model_dump(mode="json"), f"asked the poller to {'catch up' if catchup else 'poll'}")


# --- Reads ---------------------------------------------------------------------------------


async def _show(order_id: str) -> dict[str, Any] | None:
    key = (state.marketplace, order_id)
    async with reads(settings()) as read:
        order = await read.processor.order(*key)
        if order is None:
            return None
        snapshot = order.pop("snapshot")
        for column in ("acceptance_due_at", "shipment_due_at"):
            order.pop(column)
        billing = snapshot.get("billing_address") or {}
        order["source"] = snapshot.get("lengow_source")
        order["customer"] = billing.get("full_name")
        order["email"] = billing.get("email")
        order["total"] = f"{snapshot.get('total_order')} {snapshot.get('currency') or ''}"
        order["lines"] = sum(len(p.get("cart") or []) for p in snapshot.get("packages") or [])
        commands = await read.processor.commands(*key)
        actions = await read.poller.actions([command["command_id"] for command in commands])
        for command in commands:
            action = actions.get(command["command_id"])
            if action is not None:
                command["action_state"] = action["state"]
                command["action_errors"] = action["errors"]
        return {
            "order": order,
            "deadlines": await read.processor.deadlines(*key),
            "history": await read.processor.history(*key),
            "commands": commands,
            "lengow_import": await read.poller.lengow_import(*key),
            "invoice": await read.notifier.invoice(*key),
            "credit_notes": await read.notifier.credit_notes(*key),
            "refunds_held": await read.notifier.refunds_held(*key),
            "invoice_held": await read.notifier.invoice_held(*key),
        }


#: Columns a person copies to act on: never cut, whatever the terminal's width.
IDENTIFIERS = frozenset(
    {
        "marketplace_order_id",
        "command_id",
        "invoice_number",
        "credit_note",
        "refers_to",
        "message_id",
        "merchant_order_id",
        "refund",
    }
)


def _table(title: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left")
    cells = [["" if value is None else str(value) for value in row.values()] for row in rows]
    for index, column in enumerate(rows[0] if rows else ["(none)"]):
        if column in IDENTIFIERS:
            widest = max((len(row[index]) for row in cells), default=0)
            table.add_column(column, no_wrap=True, min_width=max(widest, len(column)))
        else:  # other text wraps rather than ending in an ellipsis
            table.add_column(column, overflow="fold")
    for row in cells:
        table.add_row(*row)
    return table


def cli() -> None:
    """``ordersctl``: ``--json`` is read wherever it is given, before or after the command."""
    arguments = sys.argv[1:]
    if "--json" in arguments[1:] and "--" not in arguments:
        arguments = ["--json", *(a for a in arguments if a != "--json")]
    app(args=arguments, prog_name="ordersctl")


@app.command()
def show(order_id: str) -> None:
    """An order: status, snapshot summary, history, commands and invoice."""
    found = run(_show(order_id))
    if found is None:
        errors.print(f"no order {order_id} on {state.marketplace}")
        raise typer.Exit(ExitCode.REFUSED)
    if state.as_json:
        emit(found, "")
        return
    console.print(_table(f"Order {order_id}", [found["order"]]))
    console.print(_table("Deadlines", found["deadlines"]))
    console.print(_table("History", found["history"]))
    console.print(_table("Commands", found["commands"]))
    console.print(_table("Invoice", [found["invoice"]] if found["invoice"] else []))
    if found["invoice_held"]:
        console.print(_table("Invoice held (not issued)", [found["invoice_held"]]))
    if found["credit_notes"]:
        console.print(_table("Credit notes", found["credit_notes"]))
    if found["refunds_held"]:
        console.print(_table("Refunds held (no credit note yet)", found["refunds_held"]))
    imported = found["lengow_import"]
    console.print(_table("Marked imported at Lengow", [imported] if imported else []))


@app.command(name="list")
def list_orders(
    status: Annotated[str | None, typer.Option(help="Lengow status, e.g. shipped.")] = None,
    source: Annotated[
        str | None, typer.Option(help='The source\'s name, e.g. "ManoMano Fulfillment".')
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """Orders, most recently changed first."""

    async def fetch() -> list[dict[str, Any]]:
        async with reads(settings()) as read:
            return await read.processor.orders(state.marketplace, status, source, limit)

    rows = run(fetch())
    emit(rows, _table(f"{len(rows)} orders", rows))


ATTENTION_TITLES = {
    "deadlines": "Orders near or past a deadline",
    "refused_actions": "Actions the marketplace refused",
    "documents": "Invoices and credit notes failed, in doubt or held",
    "quarantined_orders": "Orders in quarantine (Lengow's data unreadable)",
    "dead_letters": "Dead letters",
}


@app.command()
def attention(
    lead_hours: Annotated[
        float, typer.Option(help="How near a deadline counts (DEADLINE_LEAD_HOURS).")
    ] = 6.0,
) -> None:
    """What needs a person now, the most urgent first. Exits 1 when anything does (for cron
    and monitors), 0 when nothing does."""
    found = run(attention_of(settings(), datetime.now(UTC), timedelta(hours=lead_hours)))
    waiting = sum(len(rows) for rows in found.values())
    if state.as_json:
        emit(found, "")
    elif not waiting:
        console.print("nothing needs attention")
    else:
        for group, rows in found.items():
            if rows:
                console.print(_table(f"{ATTENTION_TITLES[group]}: {len(rows)}", rows))
    raise typer.Exit(ExitCode.REFUSED if waiting else ExitCode.OK)


@app.command()
def report(
    day: Annotated[
        str | None, typer.Option("--date", help="The day (UTC) to reconcile; yesterday by default.")
    ] = None,
    stuck_days: Annotated[
        float, typer.Option(help="How long unchanged in refunding or waiting_shipment is stuck.")
    ] = 3.0,
    email: Annotated[
        bool, typer.Option(help="Also email it to OPS_REPORT_EMAIL (the notifier's SMTP).")
    ] = False,
) -> None:
    """The daily reconciliation: what only the 3-day catch-up found, stuck orders, actions
    and invoices that failed. Run it from cron once a day (see the README)."""
    try:
        when = date.fromisoformat(day) if day else datetime.now(UTC).date() - timedelta(days=1)
    except ValueError:
        errors.print(f"--date must be a day such as 2026-12-01, not {day!r}")
        raise typer.Exit(ExitCode.USAGE) from None
    found = run(report_of(settings(), when, timedelta(days=stuck_days)))
    if state.as_json:
        emit(found, "")
    else:
        console.print(f"Reconciliation of {found['day']} (UTC)")
        for section, rows in found.items():
            title = f"{section.replace('_', ' ')}: {len(rows)}"
            if section != "day":
                console.print(_table(title, rows) if rows else title)
    if email:
        to = settings().ops_report_email
        if not to:
            errors.print("OPS_REPORT_EMAIL is not set: the report was not emailed")
            raise typer.Exit(ExitCode.USAGE)
        run(email_report(found, to))
        errors.print(f"emailed to {to}")


@dlq.command(name="list")
def dlq_list(
    queue: Annotated[str, typer.Argument(help="The consumer queue, e.g. processor.commands.")],
    limit: Annotated[int, typer.Option(min=1)] = 100,
) -> None:
    """What sits in QUEUE's dead-letter queue, and why."""
    letters = run(list_dead_letters(settings().amqp_url.get_secret_value(), queue, limit))
    rows = [
        {
            "message_id": letter.message_id,
            "routing_key": letter.routing_key,
            "reason": letter.reason,
            "body": letter.body[:80].decode(errors="replace"),
        }
        for letter in letters
    ]
    emit(rows, _table(f"{queue}.dlq: {len(rows)} messages", rows))


@dlq.command(name="replay")
def dlq_replay(
    queue: Annotated[str, typer.Argument(help="The consumer queue, e.g. processor.commands.")],
) -> None:
    """Send every message of QUEUE's dead-letter queue again to where it first went."""
    count = run(replay_dead_letters(settings().amqp_url.get_secret_value(), queue))
    emit({"replayed": count}, f"replayed {count} messages from {dead_letters_of(queue)}")

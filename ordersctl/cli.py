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
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import asyncpg
import typer
from rich.console import Console
from rich.table import Table

from ordersctl.feeds import FeedCheck
from shared.command_client import NoAnswerError, publish_command, send_command
from shared.contracts import CommandType, EventType
from shared.database import register_json_codecs
from shared.dead_letters import list_dead_letters, replay_dead_letters
from shared.settings import ServiceSettings

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
        conn = await _connect()
        try:
            return await _fetch(
                conn,
                "SELECT source, marketplace_order_id, kind, reason, first_seen, last_seen,"
                " polls FROM poller.quarantined_orders ORDER BY first_seen",
            )
        finally:
            await conn.close()

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


async def _connect() -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(settings().database_url.get_secret_value())
    await register_json_codecs(conn)
    return conn


async def _fetch(conn: asyncpg.Connection, query: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of a service's table; none when that service never ran here."""
    try:
        return [dict(row) for row in await conn.fetch(query, *args)]
    except asyncpg.UndefinedTableError:
        return []


async def _show(order_id: str) -> dict[str, Any] | None:
    conn = await _connect()
    try:
        key = (state.marketplace, order_id)
        orders = await _fetch(
            conn,
            "SELECT lengow_status, manomano_status, is_delivered_by_marketplace, version,"
            " source_updated_at, snapshot FROM processor.orders"
            " WHERE marketplace = $1 AND marketplace_order_id = $2",
            *key,
        )
        if not orders:
            return None
        order = orders[0]
        snapshot = order.pop("snapshot")
        billing = snapshot.get("billing_address") or {}
        order["customer"] = billing.get("full_name")
        order["email"] = billing.get("email")
        order["total"] = f"{snapshot.get('total_order')} {snapshot.get('currency') or ''}"
        order["lines"] = sum(len(p.get("cart") or []) for p in snapshot.get("packages") or [])
        where = " WHERE marketplace = $1 AND marketplace_order_id = $2"
        return {
            "order": order,
            "history": await _fetch(
                conn,
                "SELECT observed_at, from_status, to_status, kind, cause, command_id, reason"
                " FROM processor.order_transitions" + where + " ORDER BY id",
                *key,
            ),
            "commands": await _fetch(
                conn,
                "SELECT c.command_id, c.command_type, c.outcome, c.reason, c.received_at,"
                " c.completed_at, a.state AS action_state, a.errors AS action_errors"
                " FROM processor.commands c LEFT JOIN poller.actions a USING (command_id)"
                " WHERE c.marketplace = $1 AND c.marketplace_order_id = $2 ORDER BY received_at",
                *key,
            )
            or await _fetch(
                conn,
                "SELECT command_id, command_type, outcome, reason, received_at, completed_at"
                " FROM processor.commands" + where + " ORDER BY received_at",
                *key,
            ),
            "lengow_import": next(
                iter(
                    await _fetch(
                        conn,
                        "SELECT merchant_order_id, state, attempts, last_error, done_at"
                        " FROM poller.imports" + where,
                        *key,
                    )
                ),
                None,
            ),
            "invoice": next(
                iter(
                    await _fetch(
                        conn,
                        "SELECT invoice_number, issued_on, email_status, recipient, sent_at,"
                        " last_error FROM notifier.invoices" + where + " AND kind = 'invoice'",
                        *key,
                    )
                ),
                None,
            ),
            "credit_notes": await _fetch(
                conn,
                "SELECT invoice_number AS credit_note, refers_to, issued_on, total_incl,"
                " email_status, sent_at, last_error FROM notifier.invoices"
                + where
                + " AND kind = 'credit_note' ORDER BY sequence",
                *key,
            ),
            "refunds_held": await _fetch(
                conn,
                "SELECT refund_key AS refund, reason, received_at FROM notifier.refunds"
                + where
                + " AND outcome = 'held' ORDER BY received_at",
                *key,
            ),
            "invoice_held": next(
                iter(
                    await _fetch(
                        conn,
                        "SELECT reason, held_at, checked_at FROM notifier.invoice_holds"
                        + where
                        + " AND released_at IS NULL",
                        *key,
                    )
                ),
                None,
            ),
        }
    finally:
        await conn.close()


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
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
) -> None:
    """Orders, most recently changed first."""

    async def fetch() -> list[dict[str, Any]]:
        conn = await _connect()
        try:
            return await _fetch(
                conn,
                "SELECT marketplace_order_id, lengow_status, manomano_status,"
                " is_delivered_by_marketplace AS fulfillment, source_updated_at"
                " FROM processor.orders WHERE marketplace = $1"
                " AND ($2::text IS NULL OR lengow_status = $2)"
                " ORDER BY source_updated_at DESC LIMIT $3",
                state.marketplace,
                status,
                limit,
            )
        finally:
            await conn.close()

    rows = run(fetch())
    emit(rows, _table(f"{len(rows)} orders", rows))


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
    emit({"replayed": count}, f"replayed {count} messages from {queue}.dlq")

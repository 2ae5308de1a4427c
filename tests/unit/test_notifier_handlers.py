"""The notifier's handlers on the in-memory stores and a scripted mail server: no server,
milliseconds a test. The same stores pass the suite PostgreSQL passes
(tests/notifier_store.py); the integration tests still run every handler on the real broker,
database and SMTP server, and the fault suite kills them mid-call."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import Message
from typing import Any

import pytest

from services.notifier.commands import SOURCE, InvoiceCommandHandler
from services.notifier.handlers import (
    INVOICE_TIMEZONE,
    CommandRefusedError,
    InvoiceBusyError,
    InvoiceNotIssuedError,
    InvoiceService,
)
from services.notifier.invoice import DocumentKind
from services.notifier.mailer import (
    InDoubtDeliveryError,
    InvoiceMailer,
    TemporaryDeliveryError,
)
from services.notifier.memory import MemoryNotifierStore, NotifierData
from services.notifier.rendering import InvoiceRenderer
from services.notifier.repository import DocumentKey, NotifierWork, StoredInvoice
from services.notifier.sending import ResendNotDueError
from services.notifier.settings import NotifierSettings
from shared.command_entry import answered_after
from shared.command_intake import ReplyAddress, read_command
from shared.contracts import Envelope, OrderRef, OrderRefunded, OrderShipped
from tests.factories import ORDER, order_refunded, order_shipped

PAUSE = 600.0


class Clock:
    """The notifier's and the store's time, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 10, 0, tzinfo=INVOICE_TIMEZONE)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class ScriptedMailer(InvoiceMailer):
    """Composes as the real one does; each send takes the next scripted outcome (None: the
    server accepted). An email in doubt did leave: it is kept with those sent."""

    def __init__(self, settings: NotifierSettings) -> None:
        super().__init__(settings)
        self.outcomes: list[Exception | None] = []
        self.sent: list[Message] = []

    async def send(self, message: Message) -> None:
        outcome = self.outcomes.pop(0) if self.outcomes else None
        if outcome is None or isinstance(outcome, InDoubtDeliveryError):
            self.sent.append(message)
        if outcome is not None:
            raise outcome


@dataclass
class Notifier:
    service: InvoiceService
    store: MemoryNotifierStore
    data: NotifierData
    mailer: ScriptedMailer
    clock: Clock

    def events(self) -> list[str]:
        return [message.routing_key for message in self.data.outbox]

    def document(self, key: DocumentKey) -> StoredInvoice:
        return self.data.documents[key].stored

    def numbers(self) -> list[str | None]:
        return [str(message["X-Invoice-Number"]) for message in self.mailer.sent]


def notifier(renderer: InvoiceRenderer | None = None, **overrides: Any) -> Notifier:
    """``renderer``: one already warm (its templates compiled), for a benchmark."""
    defaults: dict[str, Any] = {
        "smtp_attempts": 1,
        "smtp_backoff_seconds": 0,
        "smtp_in_doubt_pause_seconds": PAUSE,
        "invoice_mode": "email_at_shipment",
    }
    settings = NotifierSettings(**{**defaults, **overrides})
    clock, data = Clock(), NotifierData()
    mailer = ScriptedMailer(settings)
    store = MemoryNotifierStore(data, clock)
    service = InvoiceService(settings, store, mailer, renderer or InvoiceRenderer(), clock)
    return Notifier(service, store, data, mailer, clock)


def shipped(order_id: str = ORDER, **data: Any) -> Envelope[OrderShipped]:
    payload = {**order_shipped(order_id), **data}
    return Envelope[OrderShipped](type="order.shipped", source="processor", data=payload)


def refunded(status: str, minute: int, **amounts: str) -> Envelope[OrderRefunded]:
    payload = order_refunded(status, minute, **amounts)
    return Envelope[OrderRefunded](type="order.refunded", source="processor", data=payload)


def invoice_key(order_id: str = ORDER) -> DocumentKey:
    return DocumentKey.invoice_of(
        OrderRef(marketplace="manomano_fr", marketplace_order_id=order_id)
    )


# --- Invoices ------------------------------------------------------------------------------


async def test_a_shipment_gets_one_invoice_emailed_once_across_redeliveries() -> None:
    n = notifier()
    shipment = shipped()
    for _ in range(3):
        await n.service.on_order_shipped(shipment)
    assert n.numbers() == ["FA2026-000001"]
    stored = n.document(invoice_key())
    assert stored.email_status == "sent" and stored.attempts == 1
    assert n.mailer.sent[0]["Message-ID"] == stored.message_id
    assert n.data.documents[invoice_key()].pdf is not None
    assert n.events() == ["invoice.sent"]


async def test_invoices_are_numbered_without_gaps_and_a_held_one_takes_no_number() -> None:
    n = notifier()
    await n.service.on_order_shipped(shipped("A"))
    await n.service.on_order_shipped(shipped("B", total_order="-1"))
    await n.service.on_order_shipped(shipped("C"))
    assert n.numbers() == ["FA2026-000001", "FA2026-000002"]
    assert n.document(invoice_key("C")).number == "FA2026-000002"
    assert invoice_key("B") not in n.data.documents


async def test_an_invoice_that_cannot_be_right_is_held_and_said_once_per_reason() -> None:
    n = notifier()
    held = shipped(total_order="-1")
    await n.service.on_order_shipped(held)
    await n.service.on_order_shipped(held)
    assert n.mailer.sent == [] and n.data.documents == {}
    assert n.events() == ["invoice.held"]
    (message,) = n.data.outbox
    assert message.envelope.data.reason
    assert await n.service.recheck_holds() == 0  # still cannot be right


async def test_an_unusable_address_fails_the_invoice_with_the_reason_and_archives_it() -> None:
    n = notifier()
    await n.service.on_order_shipped(
        shipped(billing_address={**order_shipped()["billing_address"], "email": None})
    )
    stored = n.document(invoice_key())
    assert stored.email_status == "failed" and n.mailer.sent == []
    assert n.data.documents[invoice_key()].pdf is not None
    assert n.events() == ["invoice.failed"]
    assert n.data.outbox[0].envelope.data.reason


async def test_a_server_that_refuses_is_tried_again_by_the_redelivery() -> None:
    n = notifier()
    n.mailer.outcomes = [TemporaryDeliveryError("451 try later")]
    with pytest.raises(TemporaryDeliveryError):
        await n.service.on_order_shipped(shipped())
    assert n.document(invoice_key()).email_status == "pending" and n.events() == []
    await n.service.on_order_shipped(shipped())
    assert n.numbers() == ["FA2026-000001"]
    assert n.events() == ["invoice.sent"]


async def test_an_email_in_doubt_is_sent_once_more_after_the_pause_with_its_message_id() -> None:
    n = notifier()
    n.mailer.outcomes = [InDoubtDeliveryError("no answer after DATA")]
    with pytest.raises(ResendNotDueError):
        await n.service.on_order_shipped(shipped())
    assert n.document(invoice_key()).email_status == "in_doubt"
    with pytest.raises(ResendNotDueError):  # before the pause: nothing sent
        await n.service.on_order_shipped(shipped())
    assert len(n.mailer.sent) == 1
    n.clock.advance(PAUSE + 1)
    await n.service.on_order_shipped(shipped())
    first, second = n.mailer.sent
    assert first["Message-ID"] == second["Message-ID"]
    assert n.document(invoice_key()).email_status == "sent"
    assert n.events() == ["invoice.sent"]


async def test_a_second_doubt_fails_the_invoice_and_no_third_email_leaves() -> None:
    n = notifier()
    n.mailer.outcomes = [InDoubtDeliveryError("lost"), InDoubtDeliveryError("lost again")]
    with pytest.raises(ResendNotDueError):
        await n.service.on_order_shipped(shipped())
    n.clock.advance(PAUSE + 1)
    await n.service.on_order_shipped(shipped())
    await n.service.on_order_shipped(shipped())
    assert len(n.mailer.sent) == 2
    assert n.document(invoice_key()).email_status == "failed"
    assert n.events() == ["invoice.failed"]


async def test_a_worker_that_died_mid_call_leaves_one_doubt_and_one_resend() -> None:
    n = notifier()
    async with n.store.session() as session:
        await n.service._number_invoice(session, shipped(), "a worker that died")
        await session.invoices.set_status(invoice_key(), "sending")
    with pytest.raises(InvoiceBusyError):  # its claim still runs
        await n.service.on_order_shipped(shipped())
    n.clock.advance(n.service._lease.total_seconds() + 1)
    await n.service.on_order_shipped(shipped())
    assert len(n.mailer.sent) == 1
    stored = n.document(invoice_key())
    assert (stored.email_status, stored.doubtful) == ("sent", 1)
    assert n.mailer.sent[0]["Message-ID"] == stored.message_id


async def test_marketplace_fulfilled_orders_follow_the_setting_and_mandate_issues_nothing() -> None:
    fulfilled = shipped(is_delivered_by_marketplace=True)
    invoiced = notifier()
    await invoiced.service.on_order_shipped(fulfilled)
    assert invoiced.numbers() == ["FA2026-000001"]
    for n, shipment in (
        (notifier(invoice_fulfillment_orders=False), fulfilled),
        (notifier(invoice_mode="mandate"), shipped()),
    ):
        await n.service.on_order_shipped(shipment)
        assert n.data.documents == {} and n.mailer.sent == [] and n.events() == []


# --- On request ----------------------------------------------------------------------------


async def test_on_request_an_invoice_is_archived_then_sent_once_and_resent_as_asked() -> None:
    n = notifier(invoice_mode="on_request")
    await n.service.on_order_shipped(shipped())
    assert n.document(invoice_key()).email_status == "archived" and n.mailer.sent == []
    ref = invoice_key().order
    sent = await n.service.send_requested(ref)
    assert sent.email_status == "sent" and n.numbers() == ["FA2026-000001"]
    with pytest.raises(CommandRefusedError, match="already emailed"):
        await n.service.send_requested(ref)
    await n.service.resend(ref, "c-1")
    first, again = n.mailer.sent
    assert first["Message-ID"] != again["Message-ID"]
    assert first.get_payload()[-1].get_payload() == again.get_payload()[-1].get_payload()
    assert n.data.documents[invoice_key()].resends == 1


async def test_a_release_needs_a_held_invoice_that_can_now_be_right() -> None:
    n = notifier()
    ref = invoice_key().order
    with pytest.raises(CommandRefusedError, match=f"no invoice of {ORDER} is held"):
        await n.service.release(ref)
    await n.service.on_order_shipped(shipped(total_order="-1"))
    with pytest.raises(CommandRefusedError, match="still held"):
        await n.service.release(ref)
    # The order's data fixed where the hold keeps it: the invoice can now be right.
    n.data.holds[("manomano_fr", ORDER)].stored.shipment["data"]["total_order"] = "159.80"
    released = await n.service.release(ref)
    assert released.number == "FA2026-000001" and n.numbers() == ["FA2026-000001"]
    with pytest.raises(CommandRefusedError, match="already issued"):
        await n.service.release(ref)


# --- Credit notes --------------------------------------------------------------------------


async def test_each_refund_gets_one_credit_note_referring_to_the_invoice() -> None:
    n = notifier()
    await n.service.on_order_shipped(shipped())
    partial = refunded("partial_refunded", 1, **{f"{ORDER}-2": "10.00"})
    await n.service.on_order_refunded(partial)
    await n.service.on_order_refunded(partial)  # announced twice, credited once
    await n.service.on_order_refunded(refunded("refunded", 2, **{f"{ORDER}-2": "20.00"}))
    assert n.numbers() == ["FA2026-000001", "AV2026-000001", "AV2026-000002"]
    notes = [row for key, row in n.data.documents.items() if key.kind is DocumentKind.CREDIT_NOTE]
    assert {row.stored.refers_to for row in notes} == {"FA2026-000001"}
    assert n.events() == ["invoice.sent", "credit_note.sent", "credit_note.sent"]
    totals = [message.envelope.data.total_incl for message in n.data.outbox[1:]]
    assert [str(total) for total in totals] == ["-10.00", "-149.80"]


async def test_a_refund_before_its_invoice_waits_for_it() -> None:
    n = notifier()
    refund = refunded("refunded", 1)
    with pytest.raises(InvoiceNotIssuedError):
        await n.service.on_order_refunded(refund)
    assert n.mailer.sent == [] and len(n.data.refunds) == 1
    await n.service.on_order_shipped(shipped())
    await n.service.on_order_refunded(refund)
    assert n.numbers() == ["FA2026-000001", "AV2026-000001"]


# --- Commands ------------------------------------------------------------------------------

REPLY_TO = "amq.gen-reply"


def invoice_command(type_: str, command_id: str = "c-1") -> bytes:
    data = {"marketplace": "manomano_fr", "marketplace_order_id": ORDER, "command_id": command_id}
    envelope = {"id": str(uuid.uuid4()), "type": type_, "source": "test", "data": data}
    return json.dumps(envelope).encode()


async def obey(n: Notifier, body: bytes, sender: str | None = "ordersctl") -> None:
    """Through the command queue's entry point, as the notifier wires it."""
    handler = InvoiceCommandHandler(n.service, n.store.work, {"*": ["ordersctl"]})
    entry = answered_after(n.store.work, handler.handle, SOURCE)
    await entry(read_command(body, sender), ReplyAddress(REPLY_TO, "corr-1"))


def replies(n: Notifier) -> list[dict[str, Any]]:
    return [
        {"type": m.envelope.type, **m.envelope.data.model_dump(mode="json")}
        for m in n.data.outbox
        if m.routing_key == REPLY_TO
    ]


async def test_a_command_is_obeyed_once_and_its_redelivery_repeats_the_answer() -> None:
    n = notifier(invoice_mode="on_request")
    await n.service.on_order_shipped(shipped())
    body = invoice_command("invoice.send")
    await obey(n, body)
    await obey(n, body)
    assert n.numbers() == ["FA2026-000001"]
    first, again = replies(n)
    assert first["type"] == again["type"] == "command.accepted"
    assert (first["email_status"], first["duplicate"], again["duplicate"]) == ("sent", False, True)


async def test_an_answer_lost_to_a_crash_after_the_work_is_given_by_the_redelivery() -> None:
    n = notifier(invoice_mode="on_request")
    await n.service.on_order_shipped(shipped())
    handler = InvoiceCommandHandler(n.service, n.store.work, {"*": ["ordersctl"]})

    def died() -> NotifierWork:
        raise ConnectionError("the process died before the answer was written")

    body = invoice_command("invoice.send")
    entry = answered_after(died, handler.handle, SOURCE)
    with pytest.raises(ConnectionError):
        await entry(read_command(body, "ordersctl"), ReplyAddress(REPLY_TO, "corr-1"))
    assert replies(n) == [] and len(n.mailer.sent) == 1
    await obey(n, body)  # the delivery was not acknowledged: it comes again
    assert [(reply["type"], reply["duplicate"]) for reply in replies(n)] == [
        ("command.accepted", True)
    ]
    assert len(n.mailer.sent) == 1


async def test_a_refused_command_is_answered_with_the_reason_and_a_forged_one_not_stored() -> None:
    n = notifier()
    await obey(n, invoice_command("invoice.resend"))
    await obey(n, invoice_command("invoice.send", "c-2"), sender="someone-else")
    refused, forged = replies(n)
    assert refused["type"] == forged["type"] == "command.rejected"
    assert "no invoice" in refused["reason"] and "c-1" in n.data.commands
    assert "c-2" not in n.data.commands


async def test_a_command_that_failed_before_any_email_runs_again_when_redelivered() -> None:
    n = notifier(invoice_mode="on_request")
    await n.service.on_order_shipped(shipped())
    n.mailer.outcomes = [TemporaryDeliveryError("421 closing")]
    body = invoice_command("invoice.send")
    with pytest.raises(TemporaryDeliveryError):
        await obey(n, body)
    assert n.data.commands == {} and replies(n) == []
    await obey(n, body)
    assert [reply["type"] for reply in replies(n)] == ["command.accepted"]
    assert n.numbers() == ["FA2026-000001"]

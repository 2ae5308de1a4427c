"""The processor's handlers on the in-memory stores: no server, milliseconds a test. The same
stores pass the suite PostgreSQL passes (tests/processor_store.py); the integration tests
still run every handler on the real broker and database."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.processor.command_handler import SOURCE, CommandHandler, record_action_failure
from services.processor.memory import MemoryUnitOfWork, ProcessorData
from services.processor.order_changes import handle_order_changes
from shared.command_entry import answered_in_its_transaction
from shared.command_intake import ReplyAddress, read_command
from shared.contracts import Envelope, LengowStatus, OrderActionFailed, OrderSnapshot
from shared.settlement import UnprocessableMessageError
from tests.factories import order_snapshot

S = LengowStatus
KEY = ("manomano_fr", "M1")
REPLY_TO = "amq.gen-reply"


@pytest.fixture
def data() -> ProcessorData:
    return ProcessorData()


def changed(status: str, minutes: int = 0, **overrides: Any) -> Envelope[OrderSnapshot]:
    snapshot = OrderSnapshot.model_validate(order_snapshot("M1", status, minutes=minutes))
    return Envelope[OrderSnapshot](
        type="order.changed", source="poller", data=snapshot.model_copy(update=overrides)
    )


def published(data: ProcessorData) -> list[str]:
    """What went on the event bus, in order."""
    return [m.routing_key for m in data.outbox if m.exchange == "orders.events"]


def replies(data: ProcessorData) -> list[Any]:
    """What went to the caller's reply queue, in order."""
    return [m.envelope for m in data.outbox if m.exchange == "" and m.routing_key == REPLY_TO]


async def apply(data: ProcessorData, *envelopes: Envelope[OrderSnapshot]) -> None:
    await handle_order_changes(lambda: MemoryUnitOfWork(data), list(envelopes))


async def test_a_new_order_is_stored_and_announced(data: ProcessorData) -> None:
    await apply(data, changed("waiting_acceptance"))
    assert data.orders[KEY].state.status is S.WAITING_ACCEPTANCE
    assert published(data) == ["order.status_changed"]
    (transition,) = data.transitions
    assert (transition.from_status, transition.to_status) == (None, S.WAITING_ACCEPTANCE)
    assert data.orders[KEY].due is not None and data.orders[KEY].due.acceptance is not None


async def test_a_redelivered_snapshot_changes_nothing(data: ProcessorData) -> None:
    envelope = changed("waiting_acceptance")
    await apply(data, envelope)
    await apply(data, envelope)
    assert published(data) == ["order.status_changed"]
    assert len(data.transitions) == 1


async def test_a_batch_is_decided_in_arrival_order(data: ProcessorData) -> None:
    await apply(data, changed("waiting_shipment", 1), changed("shipped", 2))
    assert data.orders[KEY].state.status is S.SHIPPED
    assert data.orders[KEY].state.shipment_announced
    assert published(data) == ["order.status_changed", "order.status_changed", "order.shipped"]


async def test_an_older_snapshot_is_ignored(data: ProcessorData) -> None:
    await apply(data, changed("shipped", 10))
    await apply(data, changed("waiting_shipment", 5))
    assert data.orders[KEY].state.status is S.SHIPPED
    assert published(data) == ["order.status_changed", "order.shipped"]


async def test_an_impossible_move_is_flagged_not_applied(data: ProcessorData) -> None:
    await apply(data, changed("shipped", 1))
    await apply(data, changed("waiting_acceptance", 2))
    assert data.orders[KEY].state.status is S.SHIPPED
    assert published(data)[-1] == "order.transition_rejected"
    assert data.transitions[-1].kind == "rejected"


async def test_a_snapshot_from_the_future_is_refused_and_nothing_is_written(
    data: ProcessorData,
) -> None:
    future = datetime.now(UTC) + timedelta(hours=2)
    with pytest.raises(UnprocessableMessageError):
        await apply(data, changed("waiting_acceptance"), changed("shipped", updated_at=future))
    assert data.orders == {} and data.outbox == [] and data.inbox == set()


def command(type: str, *, command_id: str = "c-1", **data: Any) -> bytes:
    body = {"marketplace": "manomano_fr", "marketplace_order_id": "M1", "command_id": command_id}
    return json.dumps(
        {"id": str(uuid.uuid4()), "type": type, "source": "test", "data": body | data}
    ).encode()


def handler() -> CommandHandler:
    return CommandHandler(
        carriers=["colissimo"], refund_reasons=["other"], senders={"*": ["ordersctl"]}
    )


async def send(data: ProcessorData, body: bytes, user: str | None = "ordersctl") -> None:
    """Through the command queue's entry point, as the processor wires it."""
    entry = answered_in_its_transaction(lambda: MemoryUnitOfWork(data), handler().handle, SOURCE)
    await entry(read_command(body, user), ReplyAddress(REPLY_TO, "corr-1"))


SHIP = {"carrier": "colissimo", "tracking_number": "6A1"}


async def test_a_valid_ship_is_accepted_answered_and_asked_of_the_gateway(
    data: ProcessorData,
) -> None:
    await apply(data, changed("waiting_shipment"))
    await send(data, command("order.ship", **SHIP))
    assert data.commands["c-1"].stored.outcome == "accepted"
    # On the event bus, and to the caller's reply queue.
    assert published(data)[-2:] == ["command.accepted", "order.action_requested"]
    assert [reply.type for reply in replies(data)] == ["command.accepted"]


async def test_the_shipment_completes_the_command_that_asked_for_it(data: ProcessorData) -> None:
    await apply(data, changed("waiting_shipment", 1))
    await send(data, command("order.ship", **SHIP))
    await apply(data, changed("shipped", 2))
    assert data.commands["c-1"].completed
    assert data.transitions[-1].command_id == "c-1"


async def test_a_command_the_status_does_not_allow_is_rejected_with_the_reason(
    data: ProcessorData,
) -> None:
    await apply(data, changed("waiting_acceptance"))
    await send(data, command("order.refund", refund_reason="other"))
    assert data.commands["c-1"].stored.outcome == "rejected"
    assert "order.action_requested" not in published(data)


async def test_a_command_sent_again_gets_the_same_answer_marked_duplicate(
    data: ProcessorData,
) -> None:
    await apply(data, changed("waiting_shipment"))
    await send(data, command("order.ship", **SHIP))
    await send(data, command("order.ship", **SHIP))
    assert [reply.data.duplicate for reply in replies(data)] == [False, True]
    assert published(data).count("order.action_requested") == 1


async def test_a_command_id_reused_for_other_arguments_is_refused(data: ProcessorData) -> None:
    await apply(data, changed("waiting_shipment"))
    await send(data, command("order.ship", **SHIP))
    await send(data, command("order.ship", carrier="colissimo", tracking_number="OTHER"))
    (_, refused) = replies(data)
    assert refused.type == "command.rejected" and "other arguments" in refused.data.reason
    assert data.commands["c-1"].stored.outcome == "accepted"


async def test_a_sender_without_the_right_is_refused_and_takes_no_command_id(
    data: ProcessorData,
) -> None:
    await apply(data, changed("waiting_shipment"))
    await send(data, command("order.ship", **SHIP), user="notifier")
    assert "c-1" not in data.commands
    assert published(data)[-1] == "command.rejected"
    assert "may not send" in replies(data)[0].data.reason


async def test_a_refused_action_frees_the_order_for_another_command(data: ProcessorData) -> None:
    await apply(data, changed("waiting_shipment"))
    await send(data, command("order.ship", **SHIP))
    failed = OrderActionFailed(
        marketplace="manomano_fr",
        marketplace_order_id="M1",
        command_id="c-1",
        action_type="ship",
        errors=["carrier unknown"],
    )
    await record_action_failure(
        lambda: MemoryUnitOfWork(data),
        Envelope[OrderActionFailed](type="order.action_failed", source="poller", data=failed),
    )
    await send(data, command("order.ship", command_id="c-2", **SHIP))
    assert data.commands["c-2"].stored.outcome == "accepted"

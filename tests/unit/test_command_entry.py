"""The command queue's entry point: the handler sees the command, never the reply address;
the entry point sends the answer, in the transaction the work needs it in."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import pytest

from shared.command_entry import answered_after, answered_in_its_transaction
from shared.command_intake import (
    CommandAnswer,
    ReceivedCommand,
    ReplyAddress,
    read_command,
    read_reply_address,
    rejection,
)
from shared.contracts import CommandAccepted, CommandType, Envelope
from shared.outbox import MemoryOutbox, OutboxMessage

REPLY = ReplyAddress("amq.gen-caller", "corr-7")


@dataclass
class Commits:
    """Each committed transaction's outbox, in order; a rolled-back one leaves nothing."""

    committed: list[list[OutboxMessage]] = field(default_factory=list)

    def routing(self) -> list[list[str]]:
        return [[message.routing_key for message in commit] for commit in self.committed]


class RecordedWork:
    def __init__(self, commits: Commits) -> None:
        self._commits = commits
        self._messages: list[OutboxMessage] = []
        self.outbox = MemoryOutbox(self._messages)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self._commits.committed.append(self._messages)


def ship_command() -> ReceivedCommand:
    data = {"marketplace": "manomano_fr", "marketplace_order_id": "M1", "command_id": "c-1"}
    data |= {"carrier": "colissimo", "tracking_number": "6A1"}
    body = {"id": str(uuid.uuid4()), "type": "order.ship", "source": "test", "data": data}
    return read_command(json.dumps(body).encode(), "ordersctl")


def accepted(received: ReceivedCommand, *follow_types: str) -> CommandAnswer:
    assert received.command is not None
    follow_ups = tuple(
        Envelope[dict[str, Any]](type=type_, source="test", data={}) for type_ in follow_types
    )
    return CommandAnswer.accepted(
        CommandAccepted(
            marketplace=received.command.marketplace,
            marketplace_order_id=received.command.marketplace_order_id,
            command_id=received.command.command_id,
            command_type=CommandType.SHIP,
        ),
        follow_ups,
    )


async def test_the_answer_commits_with_the_work_that_decided_it() -> None:
    commits = Commits()

    async def decide(work: RecordedWork, received: ReceivedCommand) -> CommandAnswer:
        await work.outbox.add(
            "events", Envelope[dict[str, Any]](type="decided", source="test", data={})
        )
        return accepted(received, "order.action_requested")

    entry = answered_in_its_transaction(lambda: RecordedWork(commits), decide, "processor")
    await entry(ship_command(), REPLY)
    # One transaction: what the handler wrote, the answer on the bus and to the caller,
    # then what follows from it.
    assert commits.routing() == [
        ["decided", "command.accepted", "amq.gen-caller", "order.action_requested"]
    ]
    reply = commits.committed[0][2]
    assert (reply.exchange, reply.correlation_id) == ("", "corr-7")
    assert reply.envelope.data.command_id == "c-1"


async def test_a_failing_answer_undoes_the_decision() -> None:
    """What the handler decided is not kept without its answer (the inbox would otherwise
    ignore the redelivery, and the caller would never hear back)."""
    commits = Commits()
    unwritable = CommandAnswer.__new__(CommandAnswer)  # no fields: writing it fails

    async def decide_unanswerable(work: RecordedWork, received: ReceivedCommand) -> Any:
        await work.outbox.add(
            "events", Envelope[dict[str, Any]](type="decided", source="test", data={})
        )
        return unwritable

    entry = answered_in_its_transaction(
        lambda: RecordedWork(commits), decide_unanswerable, "processor"
    )
    with pytest.raises(AttributeError):
        await entry(ship_command(), REPLY)
    assert commits.committed == []


async def test_a_delivery_already_answered_gets_no_second_answer() -> None:
    commits = Commits()

    async def decide(work: RecordedWork, received: ReceivedCommand) -> None:
        return None

    entry = answered_in_its_transaction(lambda: RecordedWork(commits), decide, "processor")
    await entry(ship_command(), REPLY)
    assert commits.routing() == [[]]


async def test_a_handler_with_its_own_transactions_is_answered_after_them() -> None:
    commits = Commits()
    handled: list[ReceivedCommand] = []

    async def handle(received: ReceivedCommand) -> CommandAnswer:
        async with RecordedWork(commits) as work:
            await work.outbox.add(
                "events", Envelope[dict[str, Any]](type="recorded", source="test", data={})
            )
        handled.append(received)
        return rejection(received, "no invoice for this order")

    await answered_after(lambda: RecordedWork(commits), handle, "notifier")(ship_command(), REPLY)
    assert commits.routing() == [["recorded"], ["command.rejected", "amq.gen-caller"]]
    assert commits.committed[1][0].envelope.data.reason == "no invoice for this order"


async def test_without_a_reply_queue_the_answer_goes_to_the_bus_only() -> None:
    commits = Commits()

    async def decide(work: RecordedWork, received: ReceivedCommand) -> CommandAnswer:
        return accepted(received)

    entry = answered_in_its_transaction(lambda: RecordedWork(commits), decide, "processor")
    await entry(ship_command(), read_reply_address("processor.commands", "corr-8"))
    assert commits.routing() == [["command.accepted"]]


def test_only_a_callers_own_queue_is_a_reply_address() -> None:
    assert read_reply_address("amq.gen-abc", "c").queue == "amq.gen-abc"
    assert read_reply_address("amq.rabbitmq.reply-to", None).queue == "amq.rabbitmq.reply-to"
    assert read_reply_address("notifier.commands", "c") == ReplyAddress(None, "c")
    assert read_reply_address(None, None) == ReplyAddress()

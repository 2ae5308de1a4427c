"""A command as it arrives and its answer as it leaves: the entry point's side, whoever the
command is for. Pure but for writing the answer to an outbox.

Commands come from other services and from ``ordersctl`` on ``orders.commands``. Each service
that obeys some reads them the same way: what could be read of the envelope (so that even a
broken command gets an answer naming it), who sent it (the AMQP user-id, which the broker
checks), and what it asked, so that a ``command_id`` reused for other arguments is refused.
Where the caller wants the answer (AMQP ``reply_to``) is kept apart, in a
:class:`ReplyAddress`: handlers never see it. They return a :class:`CommandAnswer`, and the
entry point sends it to the event bus and to that address.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from shared.contracts import (
    COMMAND_MODELS,
    CommandAccepted,
    CommandRejected,
    Envelope,
    EventType,
    OrderCommand,
    OrderRef,
    follow_up,
)
from shared.envelope_parsing import describe_validation_error, parse_envelope
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.settlement import UnprocessableMessageError
from shared.topology import EVENTS

log = get_logger(__name__)


def request_digest(command_type: str, data: Mapping[str, Any]) -> str:
    """What a command asked, whatever its command_id: the same key reused for other
    arguments is refused, as payment APIs do with idempotency keys."""
    asked = {key: value for key, value in data.items() if key != "command_id"}
    canonical = json.dumps([command_type, asked], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


#: Who may send a command type (``*``: any type not named), by AMQP ``user-id``: the broker
#: checks that a message's user-id is the user its publisher logged in as, so it cannot be
#: forged by anyone without that user's password.
CommandSenders = Mapping[str, Collection[str]]


def sender_refusal(
    command_type: str | None, user_id: str | None, senders: CommandSenders
) -> str | None:
    """Why this publisher may not send this command, or None when it may."""
    allowed = senders.get(command_type or "", senders.get("*", ()))
    if user_id is None:
        return (
            "the command carries no AMQP user-id: publish it with user_id set to your broker user"
        )
    if user_id not in allowed:
        return f"broker user {user_id!r} may not send {command_type}"
    return None


def is_reply_queue(name: str) -> bool:
    """A queue the broker named for a caller (exclusive, server-named) or direct reply-to:
    answers go only there, never to one of the pipeline's own queues."""
    return name.startswith("amq.gen-") or name.startswith("amq.rabbitmq.reply-to")


@dataclass(frozen=True)
class ReceivedCommand:
    """What could be read of a command delivery; ``problem`` says why it cannot be obeyed."""

    envelope: Envelope[dict[str, Any]] | None
    command_type: str | None
    command_id: str | None
    ref: OrderRef | None
    command: OrderCommand | None
    problem: str | None
    #: The broker user that published it (AMQP ``user-id``, checked by the broker).
    sender: str | None = None


@dataclass(frozen=True)
class ReplyAddress:
    """Where the caller asked for the answer besides the event bus: a reply queue, with the
    caller's correlation id. ``queue`` is None when there is none to answer to."""

    queue: str | None = None
    correlation_id: str | None = None


def read_reply_address(reply_to: str | None, correlation_id: str | None) -> ReplyAddress:
    """The delivery's reply address, refused unless it is a caller's own reply queue."""
    if reply_to is not None and not is_reply_queue(reply_to):
        log.warning(
            "command.reply_to_refused",
            reply_to=reply_to[:200],
            reason="not a reply queue: the answer goes to the event bus only",
        )
        reply_to = None
    return ReplyAddress(reply_to, correlation_id)


def read_command(body: bytes, user_id: str | None = None) -> ReceivedCommand:
    envelope: Envelope[dict[str, Any]] | None = None
    data: dict[str, Any] = {}
    command: OrderCommand | None = None
    problem: str | None = None
    try:
        envelope = parse_envelope(body, Envelope[dict[str, Any]])
        data = envelope.data
        model = COMMAND_MODELS.get(envelope.type)
        if model is None:
            known = ", ".join(COMMAND_MODELS)
            problem = f"unknown command type {envelope.type!r} (known: {known})"
        else:
            command = model.model_validate(data)
    except UnprocessableMessageError as unreadable:
        problem = str(unreadable)
    except ValidationError as exc:
        problem = f"invalid command: {describe_validation_error(exc)}"

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and 0 < len(value) <= 200 else None

    ref = None
    if (marketplace := text("marketplace")) and (order_id := text("marketplace_order_id")):
        with contextlib.suppress(ValidationError):  # not an order's name: the answer names none
            ref = OrderRef(marketplace=marketplace, marketplace_order_id=order_id)
    return ReceivedCommand(
        envelope=envelope,
        command_type=envelope.type[:100] if envelope else None,
        command_id=text("command_id"),
        ref=ref,
        command=command,
        problem=problem,
        sender=user_id,
    )


@dataclass(frozen=True)
class CommandAnswer:
    """What a handler answers a command: accepted (with what was done) or rejected (why),
    and the events that follow from it, published on the bus after the answer."""

    event_type: EventType
    data: CommandAccepted | CommandRejected
    follow_ups: tuple[Envelope[Any], ...] = ()

    @classmethod
    def accepted(
        cls, data: CommandAccepted, follow_ups: tuple[Envelope[Any], ...] = ()
    ) -> CommandAnswer:
        return cls(EventType.COMMAND_ACCEPTED, data, follow_ups)

    @classmethod
    def rejected(cls, data: CommandRejected) -> CommandAnswer:
        return cls(EventType.COMMAND_REJECTED, data)

    @classmethod
    def again(
        cls, was_accepted: bool, stored: Mapping[str, Any], accepted: type[CommandAccepted]
    ) -> CommandAnswer:
        """A stored answer given again to the same command, marked as a repeat; ``accepted``
        is the service's model of an acceptance."""
        repeated = {**stored, "duplicate": True}
        if was_accepted:
            return cls.accepted(accepted.model_validate(repeated))
        return cls.rejected(CommandRejected.model_validate(repeated))


def rejection(received: ReceivedCommand, reason: str) -> CommandAnswer:
    """The answer to a command that is not obeyed, naming what could be read of it."""
    return CommandAnswer.rejected(
        CommandRejected(
            command_id=received.command_id,
            command_type=received.command_type,
            marketplace=received.ref.marketplace if received.ref else None,
            marketplace_order_id=received.ref.marketplace_order_id if received.ref else None,
            reason=reason,
        )
    )


def answer_envelope(
    received: ReceivedCommand, type: EventType, data: BaseModel, source: str
) -> Envelope[Any]:
    if received.envelope is not None:
        return follow_up(received.envelope, type=type, source=source, data=data)
    return Envelope[Any](type=type, source=source, data=data)


async def send_answer(
    outbox: Outbox,
    received: ReceivedCommand,
    answered: CommandAnswer,
    address: ReplyAddress,
    source: str,
) -> None:
    """The answer on the event bus and to the caller's reply queue when it asked for one,
    then the events that follow from it, through ``outbox``: the entry point's, in the
    transaction it commits."""
    envelope = answer_envelope(received, answered.event_type, answered.data, source)
    await outbox.add(EVENTS.name, envelope)
    if address.queue:
        await outbox.add(
            "",
            envelope,
            routing_key=address.queue,
            correlation_id=address.correlation_id,
            message_id=uuid.uuid5(envelope.id, "reply"),
        )
    for follow_up_envelope in answered.follow_ups:
        await outbox.add(EVENTS.name, follow_up_envelope)

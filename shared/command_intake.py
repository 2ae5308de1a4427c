"""A command as it arrives: read at the entry point, whoever it is for. Pure, no I/O.

Commands come from other services and from ``ordersctl`` on ``orders.commands``. Each service
that obeys some reads them the same way: what could be read of the envelope (so that even a
broken command gets an answer naming it), who sent it (the AMQP user-id, which the broker
checks), where the caller wants the answer, and what it asked, so that a ``command_id`` reused
for other arguments is refused.
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
    reply_to: str | None
    reply_correlation_id: str | None
    #: The broker user that published it (AMQP ``user-id``, checked by the broker).
    sender: str | None = None


def read_command(
    body: bytes,
    reply_to: str | None,
    correlation_id: str | None,
    user_id: str | None = None,
) -> ReceivedCommand:
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
    if reply_to is not None and not is_reply_queue(reply_to):
        log.warning(
            "command.reply_to_refused",
            reply_to=reply_to[:200],
            reason="not a reply queue: the answer goes to the event bus only",
        )
        reply_to = None
    return ReceivedCommand(
        envelope=envelope,
        command_type=envelope.type[:100] if envelope else None,
        command_id=text("command_id"),
        ref=ref,
        command=command,
        problem=problem,
        reply_to=reply_to,
        reply_correlation_id=correlation_id,
        sender=user_id,
    )


def rejection(received: ReceivedCommand, reason: str) -> CommandRejected:
    """The answer to a command that is not obeyed, naming what could be read of it."""
    return CommandRejected(
        command_id=received.command_id,
        command_type=received.command_type,
        marketplace=received.ref.marketplace if received.ref else None,
        marketplace_order_id=received.ref.marketplace_order_id if received.ref else None,
        reason=reason,
    )


def answer_envelope(
    received: ReceivedCommand, type: EventType, data: BaseModel, source: str
) -> Envelope[Any]:
    if received.envelope is not None:
        return follow_up(received.envelope, type=type, source=source, data=data)
    return Envelope[Any](type=type, source=source, data=data)


async def answer(
    outbox: Outbox, received: ReceivedCommand, type: EventType, data: BaseModel, source: str
) -> None:
    """The answer on the event bus, and to the caller's reply queue when it asked for one,
    through the outbox of the transaction that recorded the outcome."""
    envelope = answer_envelope(received, type, data, source)
    await outbox.add(EVENTS.name, envelope)
    if received.reply_to:
        await outbox.add(
            "",
            envelope,
            routing_key=received.reply_to,
            correlation_id=received.reply_correlation_id,
            message_id=uuid.uuid5(envelope.id, "reply"),
        )

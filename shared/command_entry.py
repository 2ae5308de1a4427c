"""The entry point of a command queue, after the delivery was read: give the handler the
command, then send the handler's answer to the event bus and to the caller's reply queue.

Handlers take a :class:`~shared.command_intake.ReceivedCommand` and return a
:class:`~shared.command_intake.CommandAnswer`; the reply address never reaches them. Where
the answer is written depends on how the handler records what it did, so that no answer is
lost to a process that dies between the two:

- :func:`answered_in_its_transaction`: the handler decides inside a transaction the entry
  point opens, and the answer is written to that transaction's outbox before it commits. The
  processor needs this: its inbox marks the delivery in that transaction, so an answer written
  after the commit could be lost for good (the redelivery would be ignored as a duplicate).
- :func:`answered_after`: the handler runs transactions of its own (the notifier emails
  between them) and records each answer with its command before it returns. The answer is
  written next, in one transaction of its own; if the process dies in between, the delivery
  is not acknowledged, and its redelivery finds the recorded answer and gives it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from shared.command_intake import CommandAnswer, ReceivedCommand, ReplyAddress, send_answer
from shared.unit_of_work import Work

WorkT = TypeVar("WorkT", bound=Work)

#: What a command queue's subscriber calls with each delivery it read.
CommandEntry = Callable[[ReceivedCommand, ReplyAddress], Awaitable[None]]


def answered_in_its_transaction(
    new_work: Callable[[], WorkT],
    decide: Callable[[WorkT, ReceivedCommand], Awaitable[CommandAnswer | None]],
    source: str,
) -> CommandEntry:
    """``decide`` returns None for a delivery it had already answered (the inbox knew it)."""

    async def enter(received: ReceivedCommand, address: ReplyAddress) -> None:
        async with new_work() as work:
            answered = await decide(work, received)
            if answered is not None:
                await send_answer(work.outbox, received, answered, address, source)

    return enter


def answered_after(
    new_work: Callable[[], Work],
    handle: Callable[[ReceivedCommand], Awaitable[CommandAnswer]],
    source: str,
) -> CommandEntry:
    """``handle`` has recorded the answer, or will compute the same one again, when the
    command is delivered again."""

    async def enter(received: ReceivedCommand, address: ReplyAddress) -> None:
        answered = await handle(received)
        async with new_work() as work:
            await send_answer(work.outbox, received, answered, address, source)

    return enter

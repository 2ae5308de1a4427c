"""How every consumer settles a delivery: the one rule, for the FastStream subscribers and for
the hand-written consumers of :mod:`shared.consumers`.

- handled: acknowledged;
- malformed or refused (:class:`UnprocessableMessageError`): published with its reason to
  ``<queue>.dlq``, then acknowledged;
- not yet possible (:class:`RetryLaterError`) or failed otherwise (database, broker, mail
  server or Lengow away): handed back to the queue after a pause that doubles with each
  delivery of the message, up to a cap. With the defaults (1 s doubling to 300 s) the 20
  deliveries a queue allows span 58 minutes, so an outage of half an hour dead-letters
  nothing; the broker dead-letters what still fails after that.

A message waiting out its pause is held unacknowledged (it counts against the prefetch) by a
timer, not by the consumer: the consumer goes on with the next deliveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from aio_pika.abc import AbstractIncomingMessage

from shared.amqp import AmqpPublisher
from shared.logging import get_logger
from shared.observability import DEAD_LETTERED
from shared.topology import DEAD_LETTERS, REJECTION_REASON_HEADER, dead_letters_of

log = get_logger(__name__)


class UnprocessableMessageError(Exception):
    """Raised by a handler for a message that can never succeed: it is dead-lettered."""


class RetryLaterError(Exception):
    """Raised by a handler for a message it cannot handle yet, for an expected reason (another
    worker holds the same order): handed back after a pause, without alarm."""


#: Header a quorum queue sets on a message it hands out again: how often it was handed back.
DELIVERY_COUNT_HEADER = "x-delivery-count"


class Verdict(Enum):
    ACKNOWLEDGE = "handled"
    DEAD_LETTER = "dead_lettered"
    REQUEUE_LATER = "retried"


@dataclass(frozen=True)
class Settlement:
    verdict: Verdict
    reason: str = ""
    delay: float = 0.0


@dataclass(frozen=True)
class RedeliveryBackoff:
    """``first`` seconds before the first redelivery, doubling up to ``cap``."""

    first: float = 1.0
    cap: float = 300.0

    def delay(self, returned: int) -> float:
        """Pause before handing back a message already returned ``returned`` times."""
        if self.first <= 0:
            return 0.0
        # 2**returned overflows nothing: the exponent stops growing once the cap is reached.
        exponent = min(returned, 64)
        return float(min(self.cap, self.first * 2**exponent))


def delivery_count(headers: Mapping[str, Any] | None) -> int:
    """How often the broker already handed this message back (0 on a first delivery)."""
    value = (headers or {}).get(DELIVERY_COUNT_HEADER, 0)
    try:
        return max(int(value), 0)
    except (TypeError, ValueError):
        return 0


def settlement(
    error: BaseException | None, returned: int, backoff: RedeliveryBackoff
) -> Settlement:
    """What becomes of a delivery whose handling ended with ``error`` (None: it succeeded)."""
    if error is None:
        return Settlement(Verdict.ACKNOWLEDGE)
    if isinstance(error, UnprocessableMessageError):
        return Settlement(Verdict.DEAD_LETTER, reason=str(error))
    return Settlement(Verdict.REQUEUE_LATER, reason=str(error), delay=backoff.delay(returned))


def log_failure(error: BaseException, retry_in_seconds: float, **context: Any) -> None:
    """How a delivery handed back for a retry is logged: an expected wait as info, anything
    else as an error with its traceback."""
    if isinstance(error, RetryLaterError):
        log.info(
            "message.retry_later", reason=str(error), retry_in_seconds=retry_in_seconds, **context
        )
    else:
        log.error("message.failed", retry_in_seconds=retry_in_seconds, exc_info=error, **context)


class Unsettled(Protocol):
    """A delivery as the consumer that received it can dead-letter and hand it back."""

    async def dead_letter(self, reason: str) -> None: ...

    async def requeue(self) -> None: ...


async def carry_out(
    error: BaseException | None,
    delivery: Unsettled,
    returned: int,
    backoff: RedeliveryBackoff,
    requeues: DelayedRequeues,
    **context: Any,
) -> bool:
    """Settle a handled delivery by :func:`settlement`; True when the caller is to acknowledge
    it (handled, or dead-lettered), False when it is handed back later.

    A dead letter that cannot be published (the broker away) is handed back later too: the
    delivery is never acknowledged unsettled, nor left held on a live channel."""
    decided = settlement(error, returned, backoff)
    if decided.verdict is Verdict.ACKNOWLEDGE:
        return True
    if decided.verdict is Verdict.DEAD_LETTER:
        try:
            await delivery.dead_letter(decided.reason)
            return True
        except Exception as failure:
            error = failure
            decided = settlement(failure, returned, backoff)
    assert error is not None
    log_failure(error, decided.delay, **context)
    requeues.schedule(decided.delay, delivery.requeue)
    return False


class DelayedRequeues:
    """Hands deliveries back to the queue once their pause is over, each on a timer of its
    own, so that a consumer never sleeps on a failed delivery."""

    def __init__(self) -> None:
        self._waiting: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._waiting)

    def schedule(self, delay: float, requeue: Callable[[], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._requeue_after(delay, requeue))
        self._waiting.add(task)
        task.add_done_callback(self._waiting.discard)

    async def cancel(self) -> None:
        """Stop the timers: the deliveries go back to the queue when the channel closes."""
        for task in list(self._waiting):
            task.cancel()
        for task in list(self._waiting):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @staticmethod
    async def _requeue_after(delay: float, requeue: Callable[[], Awaitable[None]]) -> None:
        await asyncio.sleep(delay)
        try:
            await requeue()
        except Exception as error:
            # The channel closed meanwhile: the broker hands the delivery out again anyway.
            log.warning("message.requeue_failed", error=str(error))


async def dead_letter(
    publisher: AmqpPublisher, queue: str, message: AbstractIncomingMessage, reason: str
) -> None:
    """Publish a refused delivery to ``<queue>.dlq`` with why, where it came from and what it
    carried; the caller then acknowledges it."""
    log.warning("message.dead_lettered", reason=reason, dead_letter_queue=dead_letters_of(queue))
    DEAD_LETTERED.labels(queue).inc()
    headers: dict[str, Any] = dict(message.headers or {})
    headers[REJECTION_REASON_HEADER] = reason[:1000]
    headers["x-original-routing-key"] = message.routing_key or ""
    headers["x-original-exchange"] = message.exchange or ""
    await publisher.publish(
        DEAD_LETTERS.name,
        queue,
        message.body,
        headers=headers,
        message_id=message.message_id or str(uuid.uuid4()),
        correlation_id=message.correlation_id,
        content_type=message.content_type,
    )

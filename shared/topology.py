"""Broker topology: exchanges, consumer queues and their dead-letter queues.

Events go to the topic exchange ``orders.events``, commands to ``orders.commands``; the routing
key is the message type. Each consumer owns one durable quorum queue; a message the consumer
cannot handle goes, with its reason, to ``<queue>.dlq`` through ``orders.dead-letter``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import aiormq
from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

from shared.contracts import EVENT_MODELS, Envelope, EventType

EVENTS = RabbitExchange("orders.events", type=ExchangeType.TOPIC, durable=True)
COMMANDS = RabbitExchange("orders.commands", type=ExchangeType.TOPIC, durable=True)
DEAD_LETTERS = RabbitExchange("orders.dead-letter", type=ExchangeType.DIRECT, durable=True)

#: Header that carries, on a dead-lettered message, why it was rejected.
REJECTION_REASON_HEADER = "x-rejection-reason"


@dataclass(frozen=True)
class ConsumerQueue:
    """One consumer's durable queue: what it is bound to, and how many failed deliveries the
    broker allows before dead-lettering a message."""

    name: str
    exchange: RabbitExchange
    routing_key: str
    delivery_limit: int = 20

    @property
    def dead_letters(self) -> str:
        return dead_letters_of(self.name)


def dead_letters_of(queue: str) -> str:
    """The queue where the broker puts what ``queue``'s consumer rejected."""
    return f"{queue}.dlq"


PROCESSOR_ORDER_CHANGED = ConsumerQueue("processor.order-changed", EVENTS, "order.changed")
PROCESSOR_COMMANDS = ConsumerQueue("processor.commands", COMMANDS, "order.*")
PROCESSOR_MARKETPLACE_RULES = ConsumerQueue(
    "processor.marketplace-rules", EVENTS, "marketplace.rules_changed"
)
PROCESSOR_ACTION_FAILED = ConsumerQueue("processor.action-failed", EVENTS, "order.action_failed")
# The notifier's two event queues wait out SMTP outages: ten times the deliveries.
NOTIFIER_ORDER_SHIPPED = ConsumerQueue("notifier.order-shipped", EVENTS, "order.shipped", 200)
NOTIFIER_ORDER_REFUNDED = ConsumerQueue("notifier.order-refunded", EVENTS, "order.refunded", 200)
NOTIFIER_COMMANDS = ConsumerQueue("notifier.commands", COMMANDS, "invoice.*")
POLLER_ACTION_REQUESTED = ConsumerQueue("poller.action-requested", EVENTS, "order.action_requested")
POLLER_SYNC = ConsumerQueue("poller.sync", COMMANDS, "poller.sync")
POLLER_ORDER_RECORDED = ConsumerQueue("poller.order-recorded", EVENTS, "order.status_changed")
POLLER_ORDER_LINKED = ConsumerQueue("poller.order-linked", EVENTS, "order.link_requested")

#: Every consumer queue, by name.
CONSUMERS: dict[str, ConsumerQueue] = {
    queue.name: queue
    for queue in (
        PROCESSOR_ORDER_CHANGED,
        PROCESSOR_COMMANDS,
        NOTIFIER_ORDER_SHIPPED,
        NOTIFIER_ORDER_REFUNDED,
        NOTIFIER_COMMANDS,
        POLLER_ACTION_REQUESTED,
        POLLER_SYNC,
        POLLER_ORDER_RECORDED,
        POLLER_ORDER_LINKED,
        PROCESSOR_MARKETPLACE_RULES,
        PROCESSOR_ACTION_FAILED,
    )
}


@functools.cache
def must_be_routed(exchange: str, routing_key: str) -> bool:
    """Whether one of the pipeline's own queues is bound for this message. Then a message no
    queue takes is an error (its queue was deleted, say) that must fail the publish; an event
    only outside subscribers read (``invoice.sent``) may find nobody yet."""
    if exchange == DEAD_LETTERS.name:
        return True
    return any(
        queue.exchange.name == exchange and topic_matches(queue.routing_key, routing_key)
        for queue in CONSUMERS.values()
    )


def topic_matches(pattern: str, routing_key: str) -> bool:
    """A topic exchange's binding rule: ``*`` is one word, ``#`` zero or more."""
    return _words_match(pattern.split("."), routing_key.split("."))


def _words_match(pattern: list[str], words: list[str]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_words_match(rest, words[skip:]) for skip in range(len(words) + 1))
    return bool(words) and head in ("*", words[0]) and _words_match(rest, words[1:])


def consumer_queue(queue: ConsumerQueue) -> RabbitQueue:
    """A durable quorum queue whose poison messages end in ``<name>.dlq``.

    The broker dead-letters ``at-least-once``: a message leaves the queue only once the
    dead-letter queue has it (RabbitMQ's default, ``at-most-once``, drops it if the move
    fails), which RabbitMQ allows only with ``overflow: reject-publish`` (a full queue refuses
    new messages, which the publisher's confirms then report, rather than dropping old ones).
    """
    return RabbitQueue(
        queue.name,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=queue.routing_key,
        arguments={
            "x-dead-letter-exchange": DEAD_LETTERS.name,
            "x-dead-letter-routing-key": queue.name,
            "x-delivery-limit": queue.delivery_limit,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        },
    )


def dead_letter_queue(queue: ConsumerQueue) -> RabbitQueue:
    return RabbitQueue(
        queue.dead_letters, queue_type=QueueType.QUORUM, durable=True, routing_key=queue.name
    )


async def declare_topology(broker: RabbitBroker) -> None:
    """Declare every exchange, consumer queue, binding and dead-letter queue.

    Every service does this at start, before it publishes anything: an event published
    before its consumer's queue exists would be routed nowhere and lost, whichever service
    happens to start first."""
    dead_letters = await broker.declare_exchange(DEAD_LETTERS)
    for consumer in CONSUMERS.values():
        source = await broker.declare_exchange(consumer.exchange)
        try:
            queue = await broker.declare_queue(consumer_queue(consumer))
        except aiormq.exceptions.ChannelPreconditionFailed as error:
            raise TopologyMismatchError(
                f"queue {consumer.name} exists with other arguments than this version declares"
                f" ({error}); a quorum queue's arguments cannot change: let it drain, delete"
                " it, and start again (README: Upgrading the broker topology)"
            ) from error
        await queue.bind(source, routing_key=consumer.routing_key)
        dlq = await broker.declare_queue(dead_letter_queue(consumer))
        await dlq.bind(dead_letters, routing_key=consumer.name)


class TopologyMismatchError(RuntimeError):
    """The broker holds a queue declared with other arguments (by an older version)."""


def document_events(broker: RabbitBroker, *events: EventType) -> None:
    """Declare the events a service emits, with their payload, for the AsyncAPI document.

    The outbox relay publishes them; these declarations describe what it publishes."""
    for event in events:
        broker.publisher(
            exchange=EVENTS,
            routing_key=event.value,
            title=event.value,
            schema=Envelope[EVENT_MODELS[event]],  # type: ignore[valid-type]
            description=f"{event.value} on {EVENTS.name}, routing key {event.value}.",
        )


def described_consumer(
    url: str, queue: RabbitQueue, model: type[Envelope[Any]], description: str
) -> RabbitBroker:
    """A broker that never connects, describing for the AsyncAPI document a queue consumed by
    a :mod:`shared.consumers` consumer rather than by a FastStream subscriber."""
    described = RabbitBroker(url)
    exchange = CONSUMERS[queue.name].exchange

    async def documented(envelope: Any) -> None:
        raise NotImplementedError(f"documentation only: {queue.name} is consumed directly")

    # FastStream reads the payload's schema from the handler's annotation.
    documented.__annotations__ = {"envelope": model, "return": None}
    described.subscriber(queue, exchange, title=queue.name, description=description)(documented)
    return described

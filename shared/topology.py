"""Broker topology: exchanges, consumer queues and their dead-letter queues.

Events go to the topic exchange ``orders.events``, commands to ``orders.commands``; the routing
key is the message type. Each consumer owns one durable quorum queue; a message the consumer
cannot handle goes, with its reason, to ``<queue>.dlq`` through ``orders.dead-letter``.
"""

from __future__ import annotations

from faststream.rabbit import ExchangeType, QueueType, RabbitBroker, RabbitExchange, RabbitQueue

from shared.contracts import EVENT_MODELS, Envelope, EventType

EVENTS = RabbitExchange("orders.events", type=ExchangeType.TOPIC, durable=True)
COMMANDS = RabbitExchange("orders.commands", type=ExchangeType.TOPIC, durable=True)
DEAD_LETTERS = RabbitExchange("orders.dead-letter", type=ExchangeType.DIRECT, durable=True)

#: Header that carries, on a dead-lettered message, why it was rejected.
REJECTION_REASON_HEADER = "x-rejection-reason"


def consumer_queue(name: str, routing_key: str, *, delivery_limit: int) -> RabbitQueue:
    """A durable quorum queue whose poison messages end in ``<name>.dlq``."""
    return RabbitQueue(
        name,
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=routing_key,
        arguments={
            "x-dead-letter-exchange": DEAD_LETTERS.name,
            "x-dead-letter-routing-key": name,
            "x-delivery-limit": delivery_limit,
        },
    )


def dead_letter_queue(consumer: RabbitQueue) -> RabbitQueue:
    return RabbitQueue(
        f"{consumer.name}.dlq",
        queue_type=QueueType.QUORUM,
        durable=True,
        routing_key=consumer.name,
    )


async def declare_dead_letter_queue(broker: RabbitBroker, consumer: RabbitQueue) -> None:
    exchange = await broker.declare_exchange(DEAD_LETTERS)
    queue = await broker.declare_queue(dead_letter_queue(consumer))
    await queue.bind(exchange, routing_key=consumer.name)


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

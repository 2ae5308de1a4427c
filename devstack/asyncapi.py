"""``python -m devstack.asyncapi``: the AsyncAPI document of every service, from their
FastStream brokers (subscribers, and the events each one declares), as YAML on stdout."""

from __future__ import annotations

import sys

import yaml
from faststream.specification import AsyncAPI

from services.notifier.app import Notifier
from services.notifier.settings import NotifierSettings
from services.poller.app import Poller
from services.poller.settings import PollerSettings
from services.processor.app import Processor
from services.processor.settings import ProcessorSettings

DESCRIPTION = """\
Order management for ManoMano sellers through the Lengow API. Every message is a JSON
envelope (id, type, source, time, correlation_id, causation_id, data) whose type is also its
routing key. Events go to the topic exchange orders.events; commands (order.accept,
order.refuse, order.ship, order.refund with a caller-chosen command_id, and poller.sync) go to
orders.commands and are answered with command.accepted or command.rejected, on orders.events
and on the AMQP reply_to queue when one is given."""


def document() -> str:
    # Building the services connects to nothing; only their brokers' declarations are read.
    processor = Processor(ProcessorSettings())
    notifier = Notifier(NotifierSettings())
    poller = Poller(PollerSettings())
    brokers = [
        processor.broker,
        processor.described(),
        poller.broker,
        poller.described(),
        notifier.broker,
        notifier.described(),
    ]
    specification = AsyncAPI(
        *brokers, title="lengow-orders", version="1.0.0", description=DESCRIPTION
    )
    # Channel order follows set iteration inside FastStream: sort for a stable document.
    loaded = yaml.safe_load(specification.to_specification().to_yaml())
    text: str = yaml.safe_dump(loaded, sort_keys=True, allow_unicode=True, width=100)
    return text


if __name__ == "__main__":
    sys.stdout.write(document())

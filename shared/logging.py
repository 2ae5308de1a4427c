"""structlog set-up: JSON lines in containers, readable lines in a terminal.

Context (message id, order id, correlation id) is bound with ``structlog.contextvars`` by the
consumer, so every line logged while a message is handled carries it.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

_HANDLER_NAME = "lengow-orders"


def configure_logging(
    level: str = "INFO", fmt: Literal["auto", "json", "console"] = "auto"
) -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        # Below the level, a line is dropped before the context is gathered and timestamped:
        # the hot paths log at INFO, which production may silence.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # Libraries (FastStream, aio-pika, asyncpg) log through the standard library: same format.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info if use_json else _keep,
                renderer,
            ],
        )
    )
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace our own handler from an earlier call; leave others (pytest's caplog) in place.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(level.upper())
    # Chatty at INFO: font subsetting for every PDF, every SMTP command of the local sink.
    for name in ("fontTools", "mail.log"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # FastStream installs its own coloured handlers: route its records through ours instead.
    for name in ("faststream", "faststream.access"):
        framework = logging.getLogger(name)
        framework.handlers.clear()
        framework.propagate = True


def _keep(_: Any, __: str, event: Any) -> Any:
    return event


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger

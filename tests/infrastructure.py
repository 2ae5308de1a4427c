"""Where the tests find RabbitMQ and PostgreSQL, in this order:

1. ``AMQP_URL`` and ``DATABASE_URL``, when set, name running servers (CI sets them);
2. else, when a Docker engine answers, testcontainers starts throw-away servers;
3. else the servers of a development machine on their standard loopback ports, if they answer.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator


def docker_engine_available() -> bool:
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return False
    return True


LOCAL_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _missing(name: str) -> RuntimeError:
    return RuntimeError(
        f"{name} is not set, no Docker engine answers and nothing listens on the local port:"
        f" set {name} to a running server (see README, 'Running the tests')"
    )


@contextlib.contextmanager
def amqp_server() -> Iterator[str]:
    if url := os.environ.get("AMQP_URL"):
        yield url
        return
    if not docker_engine_available():
        if _answers(5672):
            yield LOCAL_AMQP_URL
            return
        raise _missing("AMQP_URL")
    from testcontainers.community.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-management") as rabbit:
        params = rabbit.get_connection_params()
        yield f"amqp://guest:guest@{params.host}:{params.port}/"


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    if not docker_engine_available():
        if _answers(5432):
            yield LOCAL_DATABASE_URL
            return
        raise _missing("DATABASE_URL")
    from testcontainers.community.postgres import PostgresContainer

    with PostgresContainer("postgres:16-alpine", driver=None) as postgres:
        yield postgres.get_connection_url()

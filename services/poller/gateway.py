"""The Lengow action gateway: sends the marketplace actions the processor asks for, once.

Lengow documents no idempotency key, so each command's action is recorded ("sending") before
the POST and its Lengow id after ("sent"). A record left "sending" by an interrupted attempt
is in doubt: Lengow's own list of the order's actions tells whether the POST got through
before anything is sent again. Sent actions are then checked until the marketplace has
processed them, and the verdict is published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.poller.lengow import LengowClient, LengowError, LengowRequestError
from services.poller.metrics import ACTIONS
from services.poller.repository import (
    ActionRepository,
    GatewayUnitOfWork,
    PollerRepository,
    StoredAction,
)
from services.poller.settings import LengowSource, PollerSettings
from shared.contracts import (
    Envelope,
    EventType,
    OrderActionFailed,
    OrderActionRequested,
    OrderActionSucceeded,
)
from shared.database import Connection, session_lock
from shared.logging import get_logger
from shared.messaging import UnprocessableMessageError
from shared.topology import EVENTS

log = get_logger(__name__)

SOURCE = "poller"


class ActionBusyError(Exception):
    """Another worker is sending this command's action right now: try again later."""


def _results(body: Any) -> list[dict[str, Any]]:
    found = body.get("results", []) if isinstance(body, dict) else body
    return [item for item in found or [] if isinstance(item, dict)]


def _errors(found: dict[str, Any]) -> list[str]:
    return [str(error) for error in found.get("errors") or []]


class ActionGateway:
    def __init__(
        self,
        settings: PollerSettings,
        pool: asyncpg.Pool,
        polls: PollerRepository,
        clients: dict[str, LengowClient],
        wake_relay: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._polls = polls
        self._clients = clients
        self._wake_relay = wake_relay
        self._sources = {source.name: source for source in settings.lengow_sources}

    def _unit_of_work(self, conn: Connection) -> GatewayUnitOfWork:
        return GatewayUnitOfWork(self._pool, self._wake_relay, connection=conn)

    async def _source_for(self, requested: OrderActionRequested) -> LengowSource:
        name = await self._polls.source_of(requested.marketplace, requested.marketplace_order_id)
        if name in self._sources:
            return self._sources[name]
        for source in self._sources.values():
            if source.marketplace == requested.marketplace:
                return source
        raise UnprocessableMessageError(
            f"no Lengow source is configured for marketplace {requested.marketplace!r}"
        )

    async def on_action_requested(self, envelope: Envelope[OrderActionRequested]) -> None:
        requested = envelope.data
        async with (
            self._pool.acquire() as conn,
            session_lock(conn, f"lengow-orders:action:{requested.command_id}") as mine,
        ):
            if not mine:
                raise ActionBusyError(f"action of command {requested.command_id} is busy")
            actions = ActionRepository(conn)
            stored = await actions.get(requested.command_id)
            if stored is None:
                source = await self._source_for(requested)
                stored = await actions.add(requested, source.name, envelope.correlation_id)
            elif stored.state != "sending":
                log.info("action.duplicate_ignored", state=stored.state)
                return
            await self._send(conn, stored)

    def _body(self, action: StoredAction, source: LengowSource) -> dict[str, Any]:
        return {
            "account_id": source.account_id,
            "marketplace": action.marketplace,
            "marketplace_order_id": action.marketplace_order_id,
            "action_type": action.action_type,
            **action.arguments,
        }

    async def _send(self, conn: Connection, action: StoredAction) -> None:
        actions = ActionRepository(conn)
        source = self._sources[action.source]
        client = self._clients[source.name]
        in_doubt = action.attempts > 0
        attempts = await actions.count_attempt(action.command_id)
        try:
            if in_doubt and (found := await self._already_sent(client, source, action)):
                log.warning(
                    "action.in_doubt_resolved",
                    lengow_action_id=found,
                    resolution="Lengow had received it: not sent again",
                )
                await actions.mark_sent(action.command_id, found)
                return
            response = await client.post_action(self._body(action, source))
        except LengowRequestError as refused:
            await self._finish(conn, action, "failed", [refused.message])
            return
        except LengowError as unavailable:
            if attempts >= self._settings.action_max_attempts:
                await self._finish(
                    conn,
                    action,
                    "failed",
                    [f"gave up after {attempts} attempts: {unavailable}"],
                )
                return
            log.warning("action.deferred", attempts=attempts, reason=str(unavailable))
            raise
        lengow_id = str(response.get("id")) if isinstance(response, dict) else None
        if not lengow_id or lengow_id == "None":
            await self._finish(conn, action, "failed", [f"Lengow gave no action id: {response}"])
            return
        await actions.mark_sent(action.command_id, lengow_id)
        log.info("action.sent", lengow_action_id=lengow_id, action_type=action.action_type)

    async def _already_sent(
        self, client: LengowClient, source: LengowSource, action: StoredAction
    ) -> str | None:
        """The id of an action of this type Lengow received for the order since we recorded
        ours, if any."""
        body = await client.get_actions(
            account_id=source.account_id, marketplace_order_id=action.marketplace_order_id
        )
        since = action.created_at - timedelta(minutes=1)
        for found in _results(body):
            created = found.get("created_at")
            try:
                created_at = datetime.fromisoformat(str(created)) if created else None
            except ValueError:
                created_at = None
            if found.get("action_type") == action.action_type and (
                created_at is None or created_at >= since
            ):
                return str(found.get("id"))
        return None

    async def check_sent(self) -> int:
        """Ask Lengow about every sent action; publish the verdict of the processed ones."""
        settled = 0
        async with self._pool.acquire() as conn:
            actions = ActionRepository(conn)
            for action in await actions.to_check(limit=100):
                source = self._sources.get(action.source)
                if source is None:
                    continue
                try:
                    body = await self._clients[source.name].get_actions(
                        account_id=source.account_id, id=action.lengow_action_id
                    )
                except LengowError as exc:
                    log.warning("action.check_failed", command_id=action.command_id, error=str(exc))
                    continue
                found = next(
                    (r for r in _results(body) if str(r.get("id")) == action.lengow_action_id),
                    None,
                )
                if found is None or not found.get("processed"):
                    age = datetime.now(UTC) - action.created_at
                    if age.total_seconds() > self._settings.action_timeout_seconds:
                        await self._finish(
                            conn,
                            action,
                            "failed",
                            [f"not processed by the marketplace after {age}"],
                        )
                        settled += 1
                    else:
                        await actions.touch(action.command_id)
                    continue
                errors = _errors(found)
                failed = bool(errors) or found.get("state") in ("error", "failed")
                await self._finish(
                    conn,
                    action,
                    "failed" if failed else "succeeded",
                    errors or ([f"state {found.get('state')}"] if failed else []),
                )
                settled += 1
        return settled

    async def _finish(
        self, conn: Connection, action: StoredAction, state: str, errors: list[str]
    ) -> None:
        event: OrderActionSucceeded | OrderActionFailed
        if state == "succeeded":
            event = OrderActionSucceeded(
                marketplace=action.marketplace,
                marketplace_order_id=action.marketplace_order_id,
                command_id=action.command_id,
                action_type=action.action_type,
                action_id=action.lengow_action_id or "",
            )
            type_ = EventType.ORDER_ACTION_SUCCEEDED
        else:
            event = OrderActionFailed(
                marketplace=action.marketplace,
                marketplace_order_id=action.marketplace_order_id,
                command_id=action.command_id,
                action_type=action.action_type,
                action_id=action.lengow_action_id,
                errors=errors,
            )
            type_ = EventType.ORDER_ACTION_FAILED
        async with self._unit_of_work(conn) as uow:
            await uow.actions.finish(action.command_id, state, errors)
            await uow.outbox.add(
                EVENTS.name,
                Envelope[Any](
                    type=type_, source=SOURCE, correlation_id=action.correlation_id, data=event
                ),
            )
        ACTIONS.labels(state).inc()
        log.log(
            logging.INFO if state == "succeeded" else logging.WARNING,
            f"action.{state}",
            command_id=action.command_id,
            errors=errors,
        )

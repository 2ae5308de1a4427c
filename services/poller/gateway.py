"""The Lengow action gateway: sends the marketplace actions the processor asks for, once.

Lengow has no idempotency key. The protocol (``action_protocol``) is followed here with I/O:

- an ``order.action_requested`` is recorded with its parts (one per line for line-level
  actions) and acknowledged; the first sends happen at once, the rest in :meth:`follow_up`;
- before every POST, the plugins' duplicate check (``GET /v3.0/orders/actions/`` with the same
  parameters and ``queued=True``); a part whose POST may have landed (``sending``) is resolved
  by reading every page of the order's actions and matching type and arguments, never by time
  alone, and is sent again only when Lengow has no such action;
- the POST itself is sent at most once per attempt (``LengowClient.send``);
- :meth:`follow_up` reads the verdicts of the sent parts from one listing of the account's
  recent actions (every page), and publishes ``order.action_succeeded`` or
  ``order.action_failed`` with Lengow's reason once every part has its verdict.

No handler waits for a second pool connection while it holds one, and no connection is held
while the follow-up waits for Lengow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from services.poller import action_protocol as protocol
from services.poller.lengow import (
    LengowActions,
    LengowError,
    LengowInDoubtError,
    LengowRequestError,
    LengowUnavailableError,
    form_fields,
    lengow_date,
)
from services.poller.metrics import ACTIONS
from services.poller.repository import (
    ActionPart,
    ActionSession,
    ActionStore,
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
from shared.logging import get_logger
from shared.settlement import RetryLaterError, UnprocessableMessageError
from shared.topology import EVENTS

log = get_logger(__name__)

SOURCE = "poller"
#: Lengow's list is read from a little before the oldest action waiting for its verdict.
LISTING_MARGIN = timedelta(minutes=10)


class ActionBusyError(RetryLaterError):
    """Another worker is sending this command's action right now: try again later."""


class ConsumerProgress:
    """For readiness: deliveries being handled, and when one last finished."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.last_progress = time.monotonic()

    def stalled_for(self) -> float:
        """Seconds without progress while holding deliveries (0 when idle or moving)."""
        return time.monotonic() - self.last_progress if self.in_flight else 0.0


class ActionGateway:
    def __init__(
        self,
        settings: PollerSettings,
        store: ActionStore,
        clients: Mapping[str, LengowActions],
        on_refusal: Callable[[str], None] = lambda source: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._settings = settings
        self._store = store
        self._clients = clients
        self._on_refusal = on_refusal
        self._clock = clock
        self._sources = {source.name: source for source in settings.lengow_sources}
        # Fewer sends at once than pool connections, so that polls always find one.
        self._sending = asyncio.Semaphore(settings.action_concurrency)
        self.progress = ConsumerProgress()

    def _source_for(self, name: str | None, requested: OrderActionRequested) -> LengowSource:
        if name in self._sources:
            return self._sources[name]
        for source in self._sources.values():
            if source.marketplace == requested.marketplace:
                return source
        raise UnprocessableMessageError(
            f"no Lengow source is configured for marketplace {requested.marketplace!r}"
        )

    async def on_action_requested(self, envelope: Envelope[OrderActionRequested]) -> None:
        self.progress.in_flight += 1
        try:
            async with self._sending:
                await self._record_and_send(envelope)
        finally:
            self.progress.in_flight -= 1
            self.progress.last_progress = time.monotonic()

    async def _record_and_send(self, envelope: Envelope[OrderActionRequested]) -> None:
        requested = envelope.data
        async with self._store.locked(requested.command_id) as session:
            if session is None:
                raise ActionBusyError(f"action of command {requested.command_id} is busy")
            actions = session.actions
            stored = await actions.get(requested.command_id)
            if stored is None:
                name = await session.source_of(
                    requested.marketplace, requested.marketplace_order_id
                )
                source = self._source_for(name, requested)
                parts = protocol.split_into_parts(requested.arguments)
                stored = await actions.add(requested, source.name, envelope.correlation_id, parts)
                log.info("action.recorded", action_type=stored.action_type, parts=len(parts))
            elif stored.state != "open":
                log.info("action.duplicate_ignored", state=stored.state)
                return
            await self._send_parts(session, stored, await actions.parts(stored.command_id))

    # --- Sending ---------------------------------------------------------------------------

    def _body(self, action: StoredAction, source: LengowSource, part: ActionPart) -> dict[str, Any]:
        return {
            "account_id": source.account_id,
            "marketplace": action.marketplace,
            "marketplace_order_id": action.marketplace_order_id,
            "action_type": action.action_type,
            **part.arguments,
        }

    async def _send_parts(
        self, session: ActionSession, action: StoredAction, parts: list[ActionPart]
    ) -> bool:
        """Send each part not sent yet (what cannot be done now is left to the follow-up);
        True when this gave the command its verdict."""
        source = self._sources[action.source]
        for part in parts:
            if part.state not in ("new", "sending"):
                continue
            try:
                await self._send_part(session, action, source, part)
            except LengowError as unavailable:  # a look-up failed: nothing was sent
                log.warning("action.deferred", part=part.part, reason=str(unavailable))
        return await self._conclude(session, action)

    async def _send_part(
        self, session: ActionSession, action: StoredAction, source: LengowSource, part: ActionPart
    ) -> None:
        actions = session.actions
        client = self._clients[source.name]
        bound = log.bind(command_id=action.command_id, part=part.part, line=part.line)
        if part.state == "sending":
            # In doubt: every action Lengow has for the order, before anything is sent again.
            listed = await client.actions(
                account_id=source.account_id, marketplace_order_id=action.marketplace_order_id
            )
        else:
            # The plugins' duplicate check: the same parameters, still in Lengow's queue.
            listed = await client.actions(
                **form_fields(self._body(action, source, part)), queued="True"
            )
        ids = [str(found.get("id")) for found in listed]
        found = protocol.adopt(
            listed,
            action_type=action.action_type,
            arguments=part.arguments,
            not_before=part.created_at,
            taken=await actions.known_lengow_ids(ids),
        )
        if found is not None:
            bound.warning(
                "action.already_at_lengow", lengow_action_id=found, was_in_doubt=part.state
            )
            await actions.mark_sent(part, found)
            return
        if part.attempts >= self._settings.action_max_attempts:
            await actions.settle_part(
                part, "failed", [f"gave up after {part.attempts} attempts to reach Lengow"]
            )
            return
        if part.state == "sending":
            bound.warning("action.in_doubt_not_at_lengow", resolution="sending it again")
        await actions.start_sending(part)
        try:
            answer = await client.post_action(self._body(action, source, part))
        except LengowRequestError as refused:  # 530 or another 4xx: the marketplace's word
            bound.warning("action.refused", status=refused.status, reason=refused.message)
            await actions.settle_part(part, "failed", [refused.message])
            self._on_refusal(source.name)
            return
        except LengowInDoubtError as doubt:
            bound.warning("action.in_doubt", reason=str(doubt))
            return
        except LengowUnavailableError as unavailable:
            bound.warning("action.not_sent", reason=str(unavailable))
            await actions.not_sent(part)
            return
        lengow_id = answer.get("id") if isinstance(answer, dict) else None
        if lengow_id in (None, ""):
            bound.warning("action.in_doubt", reason=f"Lengow answered without an id: {answer}")
            return
        await actions.mark_sent(part, str(lengow_id))
        bound.info("action.sent", lengow_action_id=str(lengow_id), action_type=action.action_type)

    # --- Following up ----------------------------------------------------------------------

    async def follow_up(self) -> int:
        """Send what could not be sent, resolve what is in doubt, read the verdicts; returns
        how many commands got their verdict."""
        async with self._store.session() as session:
            open_actions = await session.actions.open_actions(limit=1000)
        if not open_actions:
            return 0
        verdicts = await self._read_verdicts(open_actions)
        settled = 0
        for action, parts in open_actions:
            async with self._store.locked(action.command_id) as session:
                if session is None:
                    continue
                await self._apply_verdicts(session, action, parts, verdicts)
                fresh = await session.actions.parts(action.command_id)
                settled += int(await self._send_parts(session, action, fresh))
        return settled

    async def _read_verdicts(
        self, open_actions: list[tuple[StoredAction, list[ActionPart]]]
    ) -> dict[str, dict[str, Any]]:
        """Lengow's recent actions of each account with parts waiting, by id: one listing
        (every page) per source, from a little before the oldest sent part."""
        oldest: dict[str, datetime] = {}
        for action, parts in open_actions:
            for part in parts:
                if part.state == "sent" and part.sent_at is not None:
                    oldest[action.source] = min(
                        oldest.get(action.source, part.sent_at), part.sent_at
                    )
        horizon = self._clock() - timedelta(seconds=self._settings.action_timeout_seconds)
        found: dict[str, dict[str, Any]] = {}
        for name, since in oldest.items():
            source = self._sources.get(name)
            if source is None:
                continue
            try:
                listed = await self._clients[name].actions(
                    account_id=source.account_id,
                    updated_from=lengow_date(max(since - LISTING_MARGIN, horizon)),
                )
            except LengowError as exc:
                log.warning("action.check_failed", source=name, error=str(exc))
                continue
            found.update({str(item.get("id")): item for item in listed})
        return found

    async def _apply_verdicts(
        self,
        session: ActionSession,
        action: StoredAction,
        parts: list[ActionPart],
        listed: dict[str, dict[str, Any]],
    ) -> None:
        actions = session.actions
        now = self._clock()
        timeout = timedelta(seconds=self._settings.action_timeout_seconds)
        for part in parts:
            if part.state in protocol.FINAL_STATES:
                continue
            if protocol.too_old(part.created_at, now, timeout):
                await actions.settle_part(
                    part, "failed", [f"not processed by the marketplace after {timeout} (too old)"]
                )
                continue
            if part.state != "sent" or part.lengow_action_id not in listed:
                continue
            match protocol.verdict(listed[part.lengow_action_id]):
                case protocol.Succeeded():
                    await actions.settle_part(part, "succeeded", [])
                case protocol.Failed(reason=reason):
                    await actions.settle_part(part, "failed", [reason])
                    self._on_refusal(action.source)
                case protocol.Waiting():
                    pass

    async def _conclude(self, session: ActionSession, action: StoredAction) -> bool:
        """Publish the command's verdict once every part has one (or one part failed)."""
        parts = await session.actions.parts(action.command_id)
        outcome = protocol.command_outcome([(p.state, p.line, p.errors) for p in parts])
        if outcome.state == "open":
            return False
        return await self._finish(session, action, outcome.state, list(outcome.errors), parts)

    async def _finish(
        self,
        session: ActionSession,
        action: StoredAction,
        state: str,
        errors: list[str],
        parts: list[ActionPart],
    ) -> bool:
        ids = [part.lengow_action_id for part in parts if part.lengow_action_id]
        event: OrderActionSucceeded | OrderActionFailed
        if state == "succeeded":
            event = OrderActionSucceeded(
                marketplace=action.marketplace,
                marketplace_order_id=action.marketplace_order_id,
                command_id=action.command_id,
                action_type=action.action_type,
                action_id=",".join(ids),
            )
            type_ = EventType.ORDER_ACTION_SUCCEEDED
        else:
            event = OrderActionFailed(
                marketplace=action.marketplace,
                marketplace_order_id=action.marketplace_order_id,
                command_id=action.command_id,
                action_type=action.action_type,
                action_id=",".join(ids) or None,
                errors=errors,
            )
            type_ = EventType.ORDER_ACTION_FAILED
        async with session.work() as uow:
            if not await uow.actions.finish(action.command_id, state, errors):
                return False
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
        return True

"""One suite for the gateway's store of actions, run against PostgreSQL (``repository.py``,
tests/integration/test_action_store.py) and memory (``services/poller/memory.py``,
tests/unit/test_action_store.py): the gateway's unit tests on memory prove something only
while both pass it.

A subclass gives the fixture ``store``: an :class:`ActionStore` over a fresh, empty store.
"""

from __future__ import annotations

import uuid
from typing import Any

from services.poller.repository import ActionStore, StoredAction
from shared.contracts import Envelope, OrderActionRequested


def requested(command_id: str, action: str = "ship", **arguments: Any) -> OrderActionRequested:
    return OrderActionRequested(
        marketplace="manomano_fr",
        marketplace_order_id="M1",
        command_id=command_id,
        action_type=action,  # type: ignore[arg-type]
        arguments=arguments,
    )


async def record(store: ActionStore, command_id: str, *parts: dict[str, Any]) -> StoredAction:
    async with store.session() as session:
        return await session.actions.add(
            requested(command_id, carrier="colissimo"), "manomano", "corr-1", list(parts) or [{}]
        )


class ActionStoreContract:
    async def test_a_recorded_action_reads_back_with_its_parts(self, store: ActionStore) -> None:
        added = await record(store, "c-1", {"line": "L1"}, {"line": "L2"})
        async with store.session() as session:
            stored = await session.actions.get("c-1")
            assert stored == added
            assert (stored.state, stored.source, stored.correlation_id) == (
                "open",
                "manomano",
                "corr-1",
            )
            assert stored.arguments == {"carrier": "colissimo"}
            parts = await session.actions.parts("c-1")
            assert [(p.part, p.line, p.state, p.attempts) for p in parts] == [
                (0, "L1", "new", 0),
                (1, "L2", "new", 0),
            ]
            assert parts[0].lengow_action_id is None and parts[0].sent_at is None
            assert await session.actions.get("c-2") is None
            assert await session.actions.parts("c-2") == []

    async def test_a_part_goes_from_sending_to_sent_with_lengow_s_id(
        self, store: ActionStore
    ) -> None:
        await record(store, "c-1")
        async with store.session() as session:
            actions = session.actions
            (part,) = await actions.parts("c-1")
            await actions.start_sending(part)
            (sending,) = await actions.parts("c-1")
            assert (sending.state, sending.attempts) == ("sending", 1)
            await actions.mark_sent(sending, "777")
            (sent,) = await actions.parts("c-1")
            assert (sent.state, sent.lengow_action_id, sent.attempts) == ("sent", "777", 1)
            assert sent.sent_at is not None
            assert await actions.known_lengow_ids(["777", "778"]) == {"777"}

    async def test_only_a_part_in_doubt_goes_back_to_new(self, store: ActionStore) -> None:
        await record(store, "c-1", {"line": "L1"}, {"line": "L2"})
        async with store.session() as session:
            actions = session.actions
            first, second = await actions.parts("c-1")
            await actions.start_sending(first)
            await actions.not_sent(first)
            await actions.mark_sent(second, "9")
            await actions.not_sent(second)
            first, second = await actions.parts("c-1")
            assert (first.state, first.attempts) == ("new", 1)
            assert second.state == "sent"

    async def test_a_part_and_a_command_get_their_verdict_once(self, store: ActionStore) -> None:
        await record(store, "c-1")
        async with store.session() as session:
            actions = session.actions
            (part,) = await actions.parts("c-1")
            assert await actions.settle_part(part, "failed", ["refused"])
            assert not await actions.settle_part(part, "succeeded", [])
            (settled,) = await actions.parts("c-1")
            assert (settled.state, settled.errors) == ("failed", ["refused"])
            assert await actions.finish("c-1", "failed", ["refused"])
            assert not await actions.finish("c-1", "succeeded", [])
            stored = await actions.get("c-1")
            assert stored is not None and stored.state == "failed"

    async def test_open_actions_come_least_recently_looked_at_first(
        self, store: ActionStore
    ) -> None:
        for command_id in ("c-1", "c-2", "c-3"):
            await record(store, command_id)
        async with store.session() as session:
            actions = session.actions
            assert await actions.finish("c-2", "succeeded", [])
            first = await actions.open_actions(limit=1)
            assert [action.command_id for action, _ in first] == ["c-1"]
            again = await actions.open_actions(limit=10)
            assert [action.command_id for action, _ in again] == ["c-3", "c-1"]
            assert [len(parts) for _, parts in again] == [1, 1]

    async def test_a_command_is_worked_on_by_one_session_at_a_time(
        self, store: ActionStore
    ) -> None:
        async with store.locked("c-1") as mine:
            assert mine is not None
            async with store.locked("c-1") as other:
                assert other is None
            async with store.locked("c-2") as unrelated:
                assert unrelated is not None
        async with store.locked("c-1") as later:
            assert later is not None

    async def test_what_a_failed_unit_wrote_is_undone(self, store: ActionStore) -> None:
        await record(store, "c-1")
        envelope = Envelope[Any](id=uuid.uuid4(), type="order.action_failed", source="t", data={})
        try:
            async with store.session() as session, session.work() as work:
                assert await work.actions.finish("c-1", "failed", ["refused"])
                await work.outbox.add("orders.events", envelope)
                raise RuntimeError("the handler failed")
        except RuntimeError:
            pass
        async with store.session() as session:
            stored = await session.actions.get("c-1")
            assert stored is not None and stored.state == "open"

"""One suite for the processor's stores, run against PostgreSQL (``repository.py``,
tests/integration/test_processor_store.py) and memory (``memory.py``,
tests/unit/test_processor_store.py), the way the eventsourcing library tests its recorders:
the handlers' unit tests on memory prove something only while both pass it.

A subclass gives the fixture ``new_work``: a factory of units of work over one fresh store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from services.processor.lifecycle import OrderState
from services.processor.repository import AnsweredCommand, ProcessorWork
from shared.contracts import Envelope, LengowStatus, OrderRef, OrderSnapshot
from tests.factories import BASE_TIME, order_snapshot

NewWork = Callable[[], ProcessorWork]
S = LengowStatus


def snapshot(order_id: str, status: str = "waiting_acceptance") -> OrderSnapshot:
    return OrderSnapshot.model_validate(order_snapshot(order_id, status))


def ref(order_id: str) -> OrderRef:
    return OrderRef(marketplace="manomano_fr", marketplace_order_id=order_id)


def key(order_id: str) -> tuple[str, str]:
    return ("manomano_fr", order_id)


def state(status: LengowStatus, version: int = 1, *, shipped: bool = False) -> OrderState:
    return OrderState(status, BASE_TIME, version, shipped)


def envelope() -> Envelope[Any]:
    return Envelope[Any](
        id=uuid.uuid4(), type="order.changed", source="test", data=order_snapshot()
    )


async def add_command(
    work: ProcessorWork, command_id: str, command_type: str, order_id: str, outcome: str
) -> None:
    await work.commands.add(
        AnsweredCommand(
            command_id=command_id,
            command_type=command_type,
            ref=ref(order_id),
            arguments={"carrier": "colissimo"},
            outcome=outcome,
            reason=None if outcome == "accepted" else "refused",
            answer_type=f"command.{outcome}",
            answer={"command_id": command_id},
            message_id=uuid.uuid4(),
            request_digest=f"digest-{command_id}",
        )
    )


class ProcessorStoreContract:
    async def test_saved_orders_read_back(self, new_work: NewWork) -> None:
        async with new_work() as work:
            await work.orders.save_many(
                {
                    key("A"): (state(S.WAITING_SHIPMENT, 2), snapshot("A")),
                    key("B"): (state(S.SHIPPED, 3, shipped=True), snapshot("B")),
                }
            )
        async with new_work() as work:
            assert await work.orders.get(ref("A")) == state(S.WAITING_SHIPMENT, 2)
            assert await work.orders.get(ref("missing")) is None
            found = await work.orders.get_many([key("B"), key("missing")])
            assert found == {key("B"): state(S.SHIPPED, 3, shipped=True)}

    async def test_a_saved_order_is_replaced(self, new_work: NewWork) -> None:
        async with new_work() as work:
            await work.orders.save_many({key("A"): (state(S.WAITING_ACCEPTANCE), snapshot("A"))})
        async with new_work() as work:
            await work.orders.save_many({key("A"): (state(S.WAITING_SHIPMENT, 2), snapshot("A"))})
        async with new_work() as work:
            assert await work.orders.get(ref("A")) == state(S.WAITING_SHIPMENT, 2)

    async def test_the_inbox_knows_each_message_once(self, new_work: NewWork) -> None:
        first, second = envelope(), envelope()
        async with new_work() as work:
            assert await work.inbox.first_deliveries([first]) == {first.id}
        async with new_work() as work:
            assert await work.inbox.first_deliveries([first, second]) == {second.id}
            assert not await work.inbox.first_delivery(second)

    async def test_what_a_failed_unit_wrote_is_undone(self, new_work: NewWork) -> None:
        seen = envelope()

        async def failing() -> None:
            async with new_work() as work:
                await work.inbox.first_delivery(seen)
                await work.orders.save_many({key("A"): (state(S.SHIPPED), snapshot("A"))})
                await add_command(work, "c-1", "order.ship", "A", "accepted")
                await work.outbox.add("orders.events", seen)
                raise RuntimeError("the handler failed")

        with pytest.raises(RuntimeError):
            await failing()
        async with new_work() as work:
            assert await work.orders.get(ref("A")) is None
            assert await work.commands.get("c-1") is None
            assert await work.inbox.first_delivery(seen)

    async def test_the_outbox_counts_what_it_was_given(self, new_work: NewWork) -> None:
        async with new_work() as work:
            await work.outbox.add("orders.events", envelope())
            await work.outbox.add_many("orders.events", [envelope(), envelope()])
            assert work.outbox.added == 3

    async def test_a_stored_command_reads_back_with_its_answer(self, new_work: NewWork) -> None:
        async with new_work() as work:
            await add_command(work, "c-1", "order.ship", "A", "rejected")
        async with new_work() as work:
            stored = await work.commands.get("c-1")
            assert stored is not None
            assert (stored.outcome, stored.answer_type) == ("rejected", "command.rejected")
            assert stored.answer == {"command_id": "c-1"}
            assert stored.request_digest == "digest-c-1"
            assert await work.commands.get("c-2") is None

    async def test_accepted_commands_await_their_outcome_oldest_first(
        self, new_work: NewWork
    ) -> None:
        async with new_work() as work:
            await add_command(work, "c-1", "order.ship", "A", "accepted")
        async with new_work() as work:  # received later (PostgreSQL's received_at)
            await add_command(work, "c-2", "order.refund", "A", "accepted")
            await add_command(work, "c-3", "order.ship", "A", "rejected")
            await add_command(work, "c-4", "order.ship", "B", "accepted")
        async with new_work() as work:
            awaiting = await work.commands.awaiting_many([key("A"), key("C")])
            assert awaiting == {key("A"): [("c-1", "order.ship"), ("c-2", "order.refund")]}
            in_flight = await work.commands.in_flight(ref("A"), "order.ship")
            assert [command.command_id for command in in_flight] == ["c-1"]
            assert in_flight[0].arguments == {"carrier": "colissimo"}

    async def test_completed_or_failed_commands_no_longer_await(self, new_work: NewWork) -> None:
        async with new_work() as work:
            await add_command(work, "c-1", "order.ship", "A", "accepted")
            await add_command(work, "c-2", "order.refund", "A", "accepted")
        async with new_work() as work:
            await work.commands.complete_many(["c-1"])
            assert await work.commands.mark_failed("c-2", ["refused by the marketplace"])
            assert not await work.commands.mark_failed("c-2", ["again"])
            assert not await work.commands.mark_failed("unknown", ["no such command"])
        async with new_work() as work:
            assert await work.commands.awaiting_many([key("A")]) == {}
            assert await work.commands.in_flight(ref("A"), "order.refund") == []

    async def test_the_newest_rules_are_kept(self, new_work: NewWork) -> None:
        newer, older = BASE_TIME, BASE_TIME - timedelta(hours=1)
        async with new_work() as work:
            assert await work.rules.get("manomano_fr") is None
            assert await work.rules.save("manomano_fr", "manomano", {"read": "newer"}, newer)
        async with new_work() as work:
            assert not await work.rules.save("manomano_fr", "manomano", {"read": "older"}, older)
            assert await work.rules.get("manomano_fr") == {"read": "newer"}
            assert await work.rules.save("manomano_fr", "manomano", {"read": "again"}, newer)
            assert await work.rules.get("manomano_fr") == {"read": "again"}

"""One suite for the poller's orders to mark imported, run against PostgreSQL
(``ImportRepository``, tests/integration/test_import_store.py) and memory (``MemoryImports``,
tests/unit/test_import_store.py).

A subclass gives two fixtures: ``imports``, an :class:`Imports` over a fresh, empty store,
and ``read_from``, which records the Lengow source the poller read an order from.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from services.poller.repository import Imports

ReadFrom = Callable[[str, str], Awaitable[None]]
MARKETPLACE = "manomano_fr"


async def request(imports: Imports, *order_ids: str) -> int:
    return await imports.request_many(
        [(MARKETPLACE, order_id, f"LO-{order_id}") for order_id in order_ids]
    )


class ImportStoreContract:
    async def test_an_order_is_requested_once_and_claimed_with_its_source(
        self, imports: Imports, read_from: ReadFrom
    ) -> None:
        assert await request(imports, "A") == 1
        assert await request(imports, "A", "B") == 1
        await read_from("A", "ManoMano Standard")
        claimed = await imports.claim(10, 60)
        # One claim's orders come in no particular order (PostgreSQL's RETURNING).
        assert sorted(
            (c.marketplace_order_id, c.merchant_order_id, c.attempts, c.source) for c in claimed
        ) == [
            ("A", "LO-A", 0, "ManoMano Standard"),
            ("B", "LO-B", 0, None),
        ]
        assert await imports.claim(10, 60) == []  # held by this replica

    async def test_the_oldest_request_is_claimed_first(self, imports: Imports) -> None:
        await request(imports, "B")
        await request(imports, "A")
        assert [c.marketplace_order_id for c in await imports.claim(1, 60)] == ["B"]

    async def test_a_claim_takes_at_most_its_limit(self, imports: Imports) -> None:
        await request(imports, "A", "B", "C")
        first = {c.marketplace_order_id for c in await imports.claim(2, 60)}
        rest = {c.marketplace_order_id for c in await imports.claim(2, 60)}
        assert len(first) == 2 and first | rest == {"A", "B", "C"} and len(rest) == 1

    async def test_a_marked_order_is_not_claimed_again(self, imports: Imports) -> None:
        await request(imports, "A")
        (claimed,) = await imports.claim(10, -1)  # a lease already over
        await imports.done(claimed)
        assert await imports.claim(10, 60) == []

    async def test_a_failure_waits_its_pause_and_giving_up_stops_it(self, imports: Imports) -> None:
        await request(imports, "A", "B")
        claimed = {c.marketplace_order_id: c for c in await imports.claim(10, -1)}
        await imports.attempt_failed(claimed["A"], "Lengow away", False, -1)  # due again at once
        await imports.attempt_failed(claimed["B"], "Pas trouvé", True, -1)
        (again,) = await imports.claim(10, 60)
        assert (again.marketplace_order_id, again.attempts) == ("A", 1)

    async def test_a_failure_holds_the_order_back_for_the_pause(self, imports: Imports) -> None:
        await request(imports, "A")
        (claimed,) = await imports.claim(10, -1)
        await imports.attempt_failed(claimed, "Lengow away", False, 3600)
        assert await imports.claim(10, 60) == []

    async def test_a_link_replaces_our_id_and_starts_over(self, imports: Imports) -> None:
        await request(imports, "A")
        (claimed,) = await imports.claim(10, -1)
        await imports.attempt_failed(claimed, "Lengow away", True, -1)  # given up
        assert await imports.link(MARKETPLACE, "A", "SHOP-1")
        assert not await imports.link(MARKETPLACE, "A", "SHOP-1")  # already the one asked
        (relinked,) = await imports.claim(10, -1)
        assert (relinked.merchant_order_id, relinked.attempts) == ("SHOP-1", 0)
        await imports.done(claimed)  # the old id's outcome does not touch the new request
        assert [c.merchant_order_id for c in await imports.claim(10, 60)] == ["SHOP-1"]
        assert await imports.link(MARKETPLACE, "B", "SHOP-2")  # an order never requested

"""The import marker on the in-memory store and a scripted Lengow: no server. The store
passes the suite PostgreSQL passes (tests/import_store.py); the integration tests mark orders
at the sandbox over HTTP (tests/integration/test_poller.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.poller.imports import ImportMarker, merchant_order_id
from services.poller.lengow import LengowNotFoundError, LengowUnavailableError
from services.poller.memory import MemoryImports, PollerData
from services.poller.settings import PollerSettings
from shared.contracts import Envelope, OrderLinkRequested, OrderStatusChanged

SOURCE = "ManoMano Standard"


@dataclass
class ScriptedLengow:
    """Lengow's ``moi`` route: each call takes the next scripted failure (none: done)."""

    failures: list[Exception] = field(default_factory=list)
    marked: list[tuple[str, str]] = field(default_factory=list)

    async def mark_imported(
        self,
        *,
        account_id: int,
        marketplace: str,
        marketplace_order_id: str,
        merchant_id: str,
        background: bool = False,
    ) -> Any:
        if self.failures:
            raise self.failures.pop(0)
        self.marked.append((marketplace_order_id, merchant_id))
        return {"ok": True}


def marker(
    lengow: ScriptedLengow, data: PollerData | None = None, **overrides: Any
) -> ImportMarker:
    settings = PollerSettings.model_validate(
        {
            "lengow_sources": [
                {"name": SOURCE, "account_id": 1000, "access_token": "t", "secret": "s"}
            ],
            "import_retry_seconds": 0,
            **overrides,
        }
    )
    return ImportMarker(settings, MemoryImports(data or PollerData()), {SOURCE: lengow})


def recorded(order_id: str, kind: str = "initial", marketplace: str = "manomano_fr") -> Any:
    changed = OrderStatusChanged.model_validate(
        {
            "marketplace": marketplace,
            "marketplace_order_id": order_id,
            "from_status": None if kind == "initial" else "waiting_acceptance",
            "to_status": "waiting_acceptance" if kind == "initial" else "accepted",
            "manomano_status": None,
            "kind": kind,
            "cause": "observed",
            "observed_at": "2026-12-01T10:00:00+00:00",
        }
    )
    return Envelope[OrderStatusChanged](type="order.status_changed", source="t", data=changed)


def linked(order_id: str, merchant_id: str) -> Envelope[OrderLinkRequested]:
    link = OrderLinkRequested(
        marketplace="manomano_fr",
        marketplace_order_id=order_id,
        command_id="c-1",
        merchant_order_id=merchant_id,
    )
    return Envelope[OrderLinkRequested](type="order.link_requested", source="t", data=link)


async def test_a_new_order_is_marked_once_with_our_stable_id() -> None:
    lengow = ScriptedLengow()
    imports = marker(lengow)
    await imports.on_orders_recorded([recorded("A"), recorded("A", "normal"), recorded("B")])
    await imports.on_orders_recorded([recorded("A")])  # redelivered
    assert await imports.mark_pending() == 2
    assert await imports.mark_pending() == 0
    assert sorted(lengow.marked) == [
        ("A", merchant_order_id("manomano_fr", "A")),
        ("B", merchant_order_id("manomano_fr", "B")),
    ]


async def test_a_later_move_of_an_order_asks_for_no_marking() -> None:
    lengow = ScriptedLengow()
    imports = marker(lengow)
    await imports.on_orders_recorded([recorded("A", "normal")])
    assert await imports.mark_pending() == 0 and lengow.marked == []


async def test_lengow_away_is_retried_until_the_attempts_run_out() -> None:
    lengow = ScriptedLengow([LengowUnavailableError("503")] * 5)
    imports = marker(lengow, import_max_attempts=3)
    await imports.on_orders_recorded([recorded("A")])
    assert await imports.mark_pending() == 0
    assert len(lengow.failures) == 2 and lengow.marked == []  # three calls, then given up


async def test_lengow_away_once_then_back_marks_the_order() -> None:
    lengow = ScriptedLengow([LengowUnavailableError("503")])
    imports = marker(lengow)
    await imports.on_orders_recorded([recorded("A")])
    assert await imports.mark_pending() == 1
    assert [order for order, _ in lengow.marked] == ["A"]


async def test_an_order_lengow_does_not_know_is_given_up_at_once() -> None:
    lengow = ScriptedLengow([LengowNotFoundError(404, "Pas trouvé")] * 3)
    imports = marker(lengow)
    await imports.on_orders_recorded([recorded("A")])
    assert await imports.mark_pending() == 0
    assert len(lengow.failures) == 2  # one call only


async def test_a_link_command_writes_the_other_service_s_id_back() -> None:
    lengow = ScriptedLengow()
    imports = marker(lengow)
    await imports.on_orders_recorded([recorded("A")])
    assert await imports.mark_pending() == 1
    await imports.on_link_requested(linked("A", "SHOP-1"))
    await imports.on_link_requested(linked("A", "SHOP-1"))  # the same id again: nothing new
    assert await imports.mark_pending() == 1
    assert lengow.marked[1:] == [("A", "SHOP-1")]


async def test_an_order_of_no_configured_marketplace_is_not_sent() -> None:
    lengow = ScriptedLengow()
    imports = marker(lengow)
    await imports.on_orders_recorded([recorded("A", marketplace="manomano_es")])
    assert await imports.mark_pending() == 0 and lengow.marked == []

"""Lengow's contract, checked from both sides with the same fixtures.

The fixtures (``fixtures/*.json``) are written by us in the shapes of ../shared/lengow-api.md,
not copied from the sandbox. The client must read them (parsing, verdicts, rules, errors), and
the sandbox must answer in exactly their shapes (no key missing, none invented), so that the
client and the sandbox cannot drift apart into a contract of their own again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from sandbox.marketplace import Marketplace, now
from sandbox.server import base_url, create_sandbox, serve
from services.poller import action_protocol as protocol
from services.poller.lengow import (
    LengowClient,
    LengowInDoubtError,
    LengowNotFoundError,
    LengowRefusedError,
    RateBudget,
    lengow_date,
)
from services.poller.orders import parse_order
from services.processor.rules import MarketplaceRules
from shared.contracts import LengowStatus

FIXTURES = Path(__file__).parent / "fixtures"
#: Keys an answer may leave out (Lengow spells the order's meta two ways).
OPTIONAL_KEYS = {"order_meta", "meta"}
#: Objects keyed by codes (each value has the shape of the fixture's first one).
CODE_MAPS = {"valid_values", "carriers", "shipping_methods"}
#: Keys whose value is a text or a list of texts.
TEXT_OR_LIST = {"comments"}
TOKEN = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def assert_shape(actual: Any, expected: Any, path: str = "$") -> None:
    """``actual`` has ``expected``'s shape: the same keys at every depth, and the same JSON
    types (null goes with anything; money may be a number or a string, as at Lengow)."""
    if expected is None or actual is None:
        return
    if isinstance(expected, dict) and path.rsplit(".", 1)[-1] in CODE_MAPS:
        assert isinstance(actual, dict), f"{path}: {type(actual).__name__}, not an object"
        for code, value in actual.items():
            assert_shape(value, next(iter(expected.values()), None), f"{path}.{code}")
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {type(actual).__name__}, not an object"
        missing = set(expected) - set(actual) - OPTIONAL_KEYS
        invented = set(actual) - set(expected)
        assert not missing, f"{path}: missing {sorted(missing)}"
        assert not invented, f"{path}: not in Lengow's contract: {sorted(invented)}"
        for key in set(expected) & set(actual):
            assert_shape(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        if path.rsplit(".", 1)[-1] in TEXT_OR_LIST and isinstance(actual, str):
            return
        assert isinstance(actual, list), f"{path}: {type(actual).__name__}, not a list"
        if expected:
            for index, item in enumerate(actual):
                assert_shape(item, expected[0], f"{path}[{index}]")
    elif isinstance(expected, bool):
        assert isinstance(actual, bool), f"{path}: {actual!r} is not a boolean"
    else:
        scalar = (int, float, str)
        assert isinstance(actual, scalar) and not isinstance(actual, bool), f"{path}: {actual!r}"


# --- The client reads Lengow's shapes ------------------------------------------------------


def test_an_order_in_lengows_shape_is_read() -> None:
    snapshot = parse_order(fixture("order"))
    assert snapshot.lengow_status is LengowStatus.WAITING_SHIPMENT
    assert snapshot.currency == "EUR"
    assert str(snapshot.total_order) == "149.8"  # a number
    assert str(snapshot.lines()[0].amount) == "129.90"  # a string
    assert snapshot.lines()[1].tax is None  # no tax detail: not a 0 % rate
    assert len(snapshot.lines()) == 2
    assert not snapshot.is_delivered_by_marketplace


def test_a_fulfillment_order_is_recognised_by_its_order_type() -> None:
    raw = fixture("order")
    raw["order_types"] = [{"type": "is_delivered_by_marketplace", "label": "Fulfilled"}]
    assert parse_order(raw).is_delivered_by_marketplace


@pytest.mark.parametrize("case", fixture("action_verdicts"), ids=lambda c: c["why"])
def test_action_verdicts_are_read_as_the_plugins_read_them(case: dict[str, Any]) -> None:
    found = protocol.verdict(case["action"])
    match case["verdict"]:
        case "waiting":
            assert found == protocol.Waiting()
        case "succeeded":
            assert found == protocol.Succeeded(str(case["action"]["id"]))
        case "failed":
            assert found == protocol.Failed(case["reason"])  # the string, whole


def test_the_marketplaces_document_gives_codes_for_labels() -> None:
    rules = MarketplaceRules.from_document("manomano_fr", fixture("marketplaces")["manomano_fr"])
    ship = rules.action("ship")
    assert ship is not None
    carrier = ship.argument("carrier")
    assert carrier is not None
    assert carrier.code_of("Colissimo") == "CLSM"  # the label, given by a person
    assert carrier.code_of("CLSM") == "CLSM"
    assert carrier.code_of("Pigeon") is None
    assert rules.allowed_at("waiting_shipment") == {"ship"}
    assert rules.allowed_at("waiting_acceptance") == {"accept", "refuse"}


def test_dates_are_sent_without_fractions() -> None:
    moment = datetime(2026, 11, 30, 8, 15, 0, 123456, tzinfo=UTC)
    assert lengow_date(moment) == "2026-11-30T08:15:00+00:00"


def _mock_client(handler: Any) -> LengowClient:
    transport = httpx.MockTransport(handler)
    return LengowClient(
        "https://api.lengow.test",
        SecretStr("access"),
        SecretStr("secret"),
        budget=RateBudget(500),
        max_attempts=2,
        backoff_seconds=0.0,
        http=httpx.AsyncClient(base_url="https://api.lengow.test", transport=transport),
    )


def _answer(request: httpx.Request, name: str) -> httpx.Response:
    case = fixture("errors")[name]
    return httpx.Response(case["status"], json=case["body"], request=request)


async def test_the_client_reads_lengows_answers_and_errors() -> None:
    seen: list[httpx.Request] = []

    def lengow(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/access/get_token":
            assert request.headers["content-type"] == "application/x-www-form-urlencoded"
            return httpx.Response(200, json=fixture("token"))
        assert request.headers["Authorization"] == TOKEN  # the bare token
        if request.url.path == "/v3.0/orders/actions/" and request.method == "POST":
            return _answer(request, "logical_error")
        if request.url.path == "/v3.0/orders/moi/":
            return _answer(request, "not_found")
        page = {"count": 1, "next": None, "previous": None, "results": [fixture("order")]}
        return httpx.Response(200, json=page)

    client = _mock_client(lengow)
    pages = [
        page
        async for page in client.order_pages(
            account_id=1000,
            marketplace="manomano_fr",
            updated_from=datetime(2026, 11, 30, 8, 0, 0, 500, tzinfo=UTC),
            updated_to=datetime(2026, 11, 30, 9, 0, tzinfo=UTC),
        )
    ]
    assert [len(page) for page in pages] == [1]
    query = seen[1].url.params
    assert query["updated_from"] == "2026-11-30T08:00:00+00:00"
    assert (query["account_id"], query["page"], query["page_size"]) == ("1000", "1", "100")

    with pytest.raises(LengowRefusedError) as refused:
        await client.post_action({"account_id": 1000, "action_type": "ship"})
    assert "is not one of the accepted values" in refused.value.message
    with pytest.raises(LengowNotFoundError, match="Pas trouvé"):
        await client.mark_imported(
            account_id=1000, marketplace="manomano_fr", marketplace_order_id="M1", merchant_id="X"
        )
    posts = [r for r in seen if r.method in ("POST", "PATCH") and r.url.path.startswith("/v3")]
    assert len(posts) == 2  # neither write was sent twice


async def test_an_expired_token_is_renewed_once_and_never_shown() -> None:
    tokens = iter([TOKEN, "second-token"])

    def lengow(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/access/get_token":
            return httpx.Response(200, json={"token": next(tokens), "account_id": 1000})
        if request.headers["Authorization"] == TOKEN:
            return _answer(request, "expired_token")
        return httpx.Response(200, json={"count": 0, "next": None, "previous": None, "results": []})

    client = _mock_client(lengow)
    assert await client.get("/v3.0/orders", {"account_id": 1000}) == {
        "count": 0,
        "next": None,
        "previous": None,
        "results": [],
    }
    assert client.tokens_obtained == 2


async def test_a_write_whose_reply_is_lost_is_in_doubt_and_sent_once() -> None:
    posts = 0

    def lengow(request: httpx.Request) -> httpx.Response:
        nonlocal posts
        if request.url.path == "/access/get_token":
            return httpx.Response(200, json=fixture("token"))
        posts += 1
        return httpx.Response(504, text="Gateway Time-out", request=request)

    client = _mock_client(lengow)
    with pytest.raises(LengowInDoubtError):
        await client.post_action({"account_id": 1000, "action_type": "accept"})
    assert posts == 1


# --- The sandbox answers in Lengow's shapes ------------------------------------------------


@pytest.fixture
async def sandbox_client() -> AsyncIterator[tuple[httpx.AsyncClient, Marketplace]]:
    marketplace = Marketplace(seed=3)
    runner = await serve(create_sandbox(marketplace=marketplace))
    async with httpx.AsyncClient(base_url=base_url(runner)) as http:
        yield http, marketplace
    await runner.cleanup()


async def _token(http: httpx.AsyncClient) -> dict[str, str]:
    answer = await http.post(
        "/access/get_token",
        data={"access_token": "sandbox-access-token", "secret": "sandbox-secret"},
    )
    assert_shape(answer.json(), fixture("token"))
    return {"Authorization": answer.json()["token"]}


async def test_the_sandbox_answers_orders_in_lengows_shape(
    sandbox_client: tuple[httpx.AsyncClient, Marketplace],
) -> None:
    http, marketplace = sandbox_client
    for _ in range(30):
        marketplace.create_order(at=now(), status="waiting_shipment")
    marketplace.create_order(at=now(), anonymized=True)
    marketplace.create_order(at=now(), fulfillment=True)
    auth = await _token(http)
    page = await http.get(
        "/v3.0/orders", params={"account_id": 1000, "page_size": 1000}, headers=auth
    )
    body = page.json()
    assert len(body["results"]) == 32  # page_size is capped at 100, not refused
    expected = fixture("order")
    for order in body["results"]:
        assert_shape(order, expected)
    kinds = {type(order["total_order"]) for order in body["results"]}
    assert kinds == {float, str}  # money as numbers and as strings
    assert all(
        "price_unit" not in line
        for order in body["results"]
        for package in order["packages"]
        for line in package["cart"]
    )
    past = await http.get("/v3.0/orders", params={"account_id": 1000, "page": 2}, headers=auth)
    assert (past.status_code, past.json()) == (404, fixture("errors")["not_found"]["body"])
    anonymous = await http.get("/v3.0/orders", params={"page": 1}, headers=auth)
    assert anonymous.status_code == 400  # account_id is mandatory


async def test_the_sandbox_plays_actions_and_errors_as_lengow(
    sandbox_client: tuple[httpx.AsyncClient, Marketplace],
) -> None:
    http, marketplace = sandbox_client
    order = marketplace.create_order(at=now(), status="waiting_shipment")
    line = order.lines()[0]["marketplace_order_line_id"]
    auth = await _token(http)
    created = await http.post(
        "/v3.0/orders/actions/",
        headers=auth,
        data={
            "account_id": "1000",
            "marketplace": "manomano_fr",
            "marketplace_order_id": order.id,
            "action_type": "ship",
            "carrier": "colissimo",
            "tracking_number": "6A12345678901",
            "line": line,
        },
    )
    assert created.status_code == 201
    assert_shape(created.json(), fixture("action_created"))

    listed = await http.get(
        "/v3.0/orders/actions/",
        params={"account_id": 1000, "marketplace_order_id": order.id, "id": "nope"},
        headers=auth,
    )
    [action] = listed.json()["results"]  # the undocumented ``id`` filter is ignored
    assert_shape(action, fixture("action_created"))
    assert action["queued"] is True  # in Lengow's queue first

    labelled = await http.post(
        "/v3.0/orders/actions/",
        headers=auth,
        json={
            "account_id": 1000,
            "marketplace": "manomano_fr",
            "marketplace_order_id": order.id,
            "action_type": "ship",
            "carrier": "Colissimo",  # the label, not the code
        },
    )
    assert labelled.status_code == 530
    assert_shape(labelled.json(), fixture("errors")["logical_error"]["body"])

    document = await http.get("/v3.0/marketplaces", params={"account_id": 1000}, headers=auth)
    assert_shape(document.json()["manomano_fr"], fixture("marketplaces")["manomano_fr"])
    codes = document.json()["manomano_fr"]["orders"]["carriers"]
    assert any(code != spec["label"] for code, spec in codes.items())

    moi = await http.patch(
        "/v3.0/orders/moi/", headers=auth, json=fixture("moi") | {"marketplace_order_id": order.id}
    )
    assert moi.status_code == 200
    missing = await http.patch("/v3.0/orders/moi/", headers=auth, json=fixture("moi"))
    assert missing.json() == fixture("errors")["not_found"]["body"]


async def test_the_sandbox_refuses_expired_tokens_and_calls_past_its_budget() -> None:
    runner = await serve(create_sandbox(rate_limit=3, rate_window=60))
    try:
        async with httpx.AsyncClient(base_url=base_url(runner)) as http:
            auth = await _token(http)
            for _ in range(3):
                ok = await http.get("/v3.0/orders", params={"account_id": 1000}, headers=auth)
                assert ok.status_code == 200
            limited = await http.patch(
                "/v3.0/orders/moi/", headers=auth, json=fixture("moi")
            )  # moi shares /v3.0/orders's counter
            assert limited.status_code == 429
            assert_shape(limited.json(), fixture("errors")["rate_limited"]["body"])
            assert "Retry-After" not in limited.headers
            assert limited.json()["error"]["message"] == (
                "Request limitation: 3 reached on /v3.0/orders"
            )
            await http.post("/_sandbox/faults", json={"expire_tokens": True})
            expired = await http.get(
                "/v3.0/marketplaces", params={"account_id": 1000}, headers=auth
            )
            assert expired.status_code == 403
            assert (
                expired.json()["error"]["message"] == f"Token: {auth['Authorization']} is expired"
            )
    finally:
        await runner.cleanup()


async def test_a_page_gone_while_the_window_is_read_reads_it_again_not_fails() -> None:
    """Lengow's list shrinks while it is read (orders updated leave the window): a 404 past
    the first page means the window moved, and it is read again from its first page."""
    answers = iter(
        [
            {"count": 150, "next": "p2", "previous": None, "results": [fixture("order")] * 100},
            None,  # page 2: gone
            {"count": 100, "next": None, "previous": None, "results": [fixture("order")] * 100},
        ]
    )
    asked: list[str] = []

    def lengow(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/access/get_token":
            return httpx.Response(200, json=fixture("token"))
        asked.append(request.url.params["page"])
        answer = next(answers)
        if answer is None:
            return _answer(request, "not_found")
        return httpx.Response(200, json=answer)

    client = _mock_client(lengow)
    pages = [
        len(page)
        async for page in client.order_pages(
            account_id=1000,
            marketplace="manomano_fr",
            updated_from=datetime(2026, 11, 30, tzinfo=UTC),
            updated_to=datetime(2026, 11, 30, 9, tzinfo=UTC),
        )
    ]
    assert asked == ["1", "2", "1"]  # never ``next`` as a URL: page + 1, then page 1 again
    assert pages == [100, 100]

"""The Lengow sandbox: an HTTP server that answers like the Lengow API, for tests and demos.

It plays the contract of ../shared/lengow-api.md, not a friendlier one:

- ``POST /access/get_token`` (form) answers ``{token, account_id}``; every other call needs
  the bare token in ``Authorization`` (401 unknown, 403 ``Token: <token> is expired``);
- ``account_id`` is mandatory on every ``/v3.0`` call; unknown filters are ignored;
- pages: ``page_size`` capped at 100, 404 ``{"detail": "Pas trouvé."}`` past the last page;
- a budget of calls per route and window per account (``/v3.0/orders`` and ``moi`` share
  one), answered 429 ``Request limitation: 500 reached on /v3.0/orders`` with no
  ``Retry-After``;
- ``POST /v3.0/orders/actions/`` takes form or JSON bodies; bad input is 530; the created
  action is ``queued``, then sent on, then ``processed`` or refused with ``errors`` a string;
- ``PATCH /v3.0/orders/moi/``; ``GET /v3.0/marketplaces`` with codes that differ from labels.

Control routes under ``/_sandbox/`` create and move orders and inject faults: 5xx and 429
answers (with ``Retry-After``), slow answers, expired tokens, malformed orders, refusals by
the marketplace, and replies lost after the work was done (504 or a timeout). Not a production
service.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from sandbox.marketplace import (
    MARKETPLACE,
    MARKETPLACE_DOCUMENT,
    ActionRefused,
    Marketplace,
    OrderNotFound,
    now,
    truthy,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Lengow's largest page.
MAX_PAGE_SIZE = 100
NOT_FOUND = {"detail": "Pas trouvé."}
#: Routes that share one rate counter at Lengow.
SHARED_COUNTERS = {"/v3.0/orders/moi/": "/v3.0/orders"}


@dataclass
class Faults:
    """Faults to inject into the next Lengow calls (control routes are never affected)."""

    statuses: list[int] = field(default_factory=list)
    retry_after: float = 1.0
    delays: list[float] = field(default_factory=list)
    malformed_orders: int = 0
    #: For the next writes (POST, PATCH): the work is done, then the reply is lost, as
    #: ``504`` or as a wait of that many seconds before answering.
    lost_replies: list[str | float] = field(default_factory=list)
    #: Statuses answered to the next writes instead of doing them.
    write_statuses: list[int] = field(default_factory=list)


@dataclass
class Account:
    account_id: int
    access_token: str
    secret: str


@dataclass
class SandboxState:
    marketplace: Marketplace
    accounts: list[Account]
    token_ttl: timedelta
    page_size: int = MAX_PAGE_SIZE
    rate_limit: int = 500
    rate_window: float = 60.0
    faults: Faults = field(default_factory=Faults)
    tokens: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    #: Calls answered 429 by the rate limit, per counter.
    rate_limited: Counter[str] = field(default_factory=Counter)
    _spent: dict[tuple[int, str], deque[float]] = field(default_factory=dict)

    def spend(self, account_id: int, counter: str, at: float) -> bool:
        """False when the account has used its budget on the counter in the window."""
        spent = self._spent.setdefault((account_id, counter), deque())
        while spent and spent[0] <= at - self.rate_window:
            spent.popleft()
        if len(spent) >= self.rate_limit:
            return False
        spent.append(at)
        return True


STATE = web.AppKey("state", SandboxState)


def error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "code": status}}, status=status, headers=headers
    )


def _json_error(status: int, message: str) -> dict[str, Any]:
    return {
        "text": orjson.dumps({"error": {"message": message, "code": status}}).decode(),
        "content_type": "application/json",
    }


@web.middleware
async def lengow_faults(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    if request.path.startswith("/_sandbox"):
        return await handler(request)
    state.calls[f"{request.method} {request.path}"] += 1
    faults = state.faults
    if faults.delays:
        await asyncio.sleep(faults.delays.pop(0))
    if faults.statuses:
        status = faults.statuses.pop(0)
        if status == 429:
            return error(429, "Too many requests", **{"Retry-After": f"{faults.retry_after:g}"})
        return error(status, "Internal server error")
    is_write = request.method in ("POST", "PATCH") and request.path.startswith("/v3.0")
    if is_write and faults.write_statuses:
        return error(faults.write_statuses.pop(0), "Internal server error")
    response = await handler(request)
    if is_write and faults.lost_replies:
        lost = faults.lost_replies.pop(0)
        if lost == "504":
            return error(504, "Gateway Time-out")
        await asyncio.sleep(float(lost))  # longer than the client waits
    return response


def authenticated(request: web.Request) -> int:
    """The account of the call's token, and its budget spent (429 past it)."""
    state = request.app[STATE]
    token = request.headers.get("Authorization", "")
    account = state.tokens.get(token)
    if account is None:
        raise web.HTTPUnauthorized(**_json_error(401, "Unauthorized access: invalid token"))
    if account[1] <= now():
        raise web.HTTPForbidden(**_json_error(403, f"Token: {token} is expired"))
    counter = SHARED_COUNTERS.get(request.path, request.path)
    loop = asyncio.get_running_loop()
    if not state.spend(account[0], counter, loop.time()):
        state.rate_limited[counter] += 1
        raise web.HTTPTooManyRequests(
            **_json_error(429, f"Request limitation: {state.rate_limit} reached on {counter}")
        )
    return account[0]


def _check_account(asked: Any, account_id: int) -> None:
    if asked in (None, ""):
        raise web.HTTPBadRequest(**_json_error(400, "account_id is required"))
    if str(asked) != str(account_id):
        raise web.HTTPForbidden(**_json_error(403, "account_id does not match the token"))


def _date(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPBadRequest(**_json_error(400, f"{name} is not an ISO 8601 date")) from None


async def _body(request: web.Request) -> dict[str, Any]:
    """Form fields or JSON, as Lengow takes both."""
    if request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(**_json_error(400, "the body must be an object"))
        return body
    return dict(await request.post())


async def get_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = dict(await request.post())  # form-encoded, as Lengow's clients send it
    for account in state.accounts:
        if (
            body.get("access_token") == account.access_token
            and body.get("secret") == account.secret
        ):
            token = secrets.token_hex(16)
            state.tokens[token] = (account.account_id, now() + state.token_ttl)
            return web.json_response({"token": token, "account_id": account.account_id})
    return error(401, "Invalid access token or secret")


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def _page(request: web.Request, items: list[Any], default_size: int) -> tuple[int, int, list[Any]]:
    """The requested page (1-based, at most 100 a page); 404 past the last page."""
    try:
        page = max(int(request.query.get("page", "1")), 1)
        size = min(max(int(request.query.get("page_size", str(default_size))), 1), MAX_PAGE_SIZE)
    except ValueError:
        raise web.HTTPBadRequest(**_json_error(400, "page and page_size are numbers")) from None
    if page > 1 and (page - 1) * size >= len(items):
        raise web.HTTPNotFound(text=_dumps(NOT_FOUND), content_type="application/json")
    return page, size, items[(page - 1) * size : page * size]


def _listing(
    request: web.Request, page: int, size: int, total: int, results: list[Any]
) -> web.Response:
    def page_url(number: int) -> str:
        return str(request.url.update_query(page=str(number)))

    more = page * size < total
    return web.json_response(
        dumps=_dumps,
        data={
            "count": total,
            "next": page_url(page + 1) if more else None,
            "previous": page_url(page - 1) if page > 1 else None,
            "results": results,
        },
    )


async def list_orders(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _check_account(request.query.get("account_id"), authenticated(request))
    asked = request.query.get("marketplace")
    orders = (
        []
        if asked not in (None, MARKETPLACE)
        else state.marketplace.query(
            updated_from=_date(request, "updated_from"),
            updated_to=_date(request, "updated_to"),
            order_date_from=_date(request, "marketplace_order_date_from"),
            order_date_to=_date(request, "marketplace_order_date_to"),
            marketplace_order_id=request.query.get("marketplace_order_id"),
            lengow_status=request.query.get("lengow_status"),
            not_imported=request.query.get("merchant_order_id") == "None",
        )
    )
    page, size, chunk = _page(request, orders, state.page_size)
    results = [dict(order.raw) for order in chunk]
    for index in range(min(state.faults.malformed_orders, len(results))):
        results[index] = {**results[index], "updated_at": "yesterday-ish", "total_order": "n/a"}
        state.faults.malformed_orders -= 1
    return _listing(request, page, size, len(orders), results)


async def post_action(request: web.Request) -> web.Response:
    state = request.app[STATE]
    account_id = authenticated(request)
    body = await _body(request)
    _check_account(body.get("account_id"), account_id)
    if body.get("marketplace") != MARKETPLACE:
        return error(530, f"marketplace {body.get('marketplace')!r} is not active on the account")
    try:
        action = state.marketplace.request_action(body, now())
    except ActionRefused as refused:
        return error(530, str(refused))
    answer = action.as_json()
    # The answer shows the action as created, before Lengow queues it.
    return web.json_response({**answer, "queued": False}, status=201)


async def get_actions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _check_account(request.query.get("account_id"), authenticated(request))
    found = sorted(state.marketplace.actions.values(), key=lambda a: a.id)
    # The documented filters only; any other (``id``, ``action_type``...) is ignored.
    if order_id := request.query.get("marketplace_order_id"):
        found = [a for a in found if a.order_id == order_id]
    asked = request.query.get("queued")
    if (queued := truthy(asked) if asked is not None else None) is not None:
        found = [a for a in found if a.queued == queued]
    if updated_from := _date(request, "updated_from"):
        found = [a for a in found if a.updated_at >= updated_from]
    if updated_to := _date(request, "updated_to"):
        found = [a for a in found if a.updated_at <= updated_to]
    page, size, chunk = _page(request, found, MAX_PAGE_SIZE)
    return _listing(request, page, size, len(found), [a.as_json() for a in chunk])


async def mark_imported(request: web.Request) -> web.Response:
    state = request.app[STATE]
    account_id = authenticated(request)
    body = await _body(request)
    _check_account(body.get("account_id"), account_id)
    merchant_ids = body.get("merchant_order_id")
    if not isinstance(merchant_ids, list) or not all(isinstance(i, str) for i in merchant_ids):
        return error(400, "merchant_order_id must be a list of ids")
    try:
        order = state.marketplace.mark_imported(str(body.get("marketplace_order_id")), merchant_ids)
    except OrderNotFound:
        return web.json_response(NOT_FOUND, status=404)
    return web.json_response(
        {
            "marketplace": order.raw["marketplace"],
            "marketplace_order_id": order.id,
            "merchant_order_id": order.raw["merchant_order_id"],
        }
    )


async def get_marketplaces(request: web.Request) -> web.Response:
    _check_account(request.query.get("account_id"), authenticated(request))
    return web.json_response(MARKETPLACE_DOCUMENT)


# --- Control routes ------------------------------------------------------------------------


async def control_faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.json()
    count = int(body.get("count", 1))
    if "status" in body:
        state.faults.statuses.extend([int(body["status"])] * count)
        state.faults.retry_after = float(body.get("retry_after", state.faults.retry_after))
    if "delay" in body:
        state.faults.delays.extend([float(body["delay"])] * count)
    if body.get("expire_tokens"):
        state.tokens = {t: (a, now() - timedelta(seconds=1)) for t, (a, _) in state.tokens.items()}
    if "malformed_orders" in body:
        state.faults.malformed_orders += int(body["malformed_orders"])
    if "lose_reply" in body:
        state.faults.lost_replies.extend([body["lose_reply"]] * count)
    if "write_status" in body:
        state.faults.write_statuses.extend([int(body["write_status"])] * count)
    if "refuse" in body:
        state.marketplace.refusals.extend([str(body["refuse"])] * count)
    if body.get("clear"):
        state.faults = Faults()
    return web.json_response({"ok": True})


async def control_create_orders(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.json()
    created = []
    base = now() - timedelta(minutes=float(body.get("minutes_ago", 0)))
    spread = float(body.get("spread_minutes", 0))
    count = int(body.get("count", 1))
    for index in range(count):
        at = base + timedelta(minutes=spread * index / max(count, 1))
        order = state.marketplace.create_order(
            at=at,
            status=body.get("status", "waiting_acceptance"),
            fulfillment=bool(body.get("fulfillment", False)),
            missing_email=bool(body.get("missing_email", False)),
            order_id=body.get("order_id") if count == 1 else None,
        )
        created.append(order.id)
    return web.json_response({"created": created}, status=201)


async def control_move(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.json()
    order_id = request.match_info["order_id"]
    if order_id not in state.marketplace.orders:
        return error(404, f"no order {order_id}")
    order = state.marketplace.move(order_id, body["status"], now())
    return web.json_response({"id": order.id, "status": order.status})


async def control_advance(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.json() if request.can_read_body else {}
    moved = state.marketplace.advance(now(), float(body.get("share", 0.3)))
    return web.json_response({"moved": moved})


async def control_orders(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({o.id: o.status for o in state.marketplace.orders.values()})


async def control_calls(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            **dict(state.calls),
            "rate_limited": dict(state.rate_limited),
            "moi": dict(state.marketplace.moi_calls),
        }
    )


async def _apply_actions(app: web.Application) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            app[STATE].marketplace.apply_due_actions(now())
            await asyncio.sleep(0.1)

    task = asyncio.create_task(loop())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_sandbox(
    *,
    accounts: list[Account] | None = None,
    marketplace: Marketplace | None = None,
    token_ttl: timedelta = timedelta(hours=1),
    page_size: int = MAX_PAGE_SIZE,
    rate_limit: int = 500,
    rate_window: float = 60.0,
) -> web.Application:
    """``page_size``: the page when a call names none (a call may ask for at most 100)."""
    app = web.Application(middlewares=[lengow_faults], client_max_size=2 * 1024 * 1024)
    app[STATE] = SandboxState(
        marketplace=marketplace or Marketplace(),
        accounts=accounts or [Account(1000, "sandbox-access-token", "sandbox-secret")],
        token_ttl=token_ttl,
        page_size=min(page_size, MAX_PAGE_SIZE),
        rate_limit=rate_limit,
        rate_window=rate_window,
    )
    app.router.add_post("/access/get_token", get_token)
    app.router.add_get("/v3.0/orders", list_orders)
    app.router.add_patch("/v3.0/orders/moi/", mark_imported)
    app.router.add_post("/v3.0/orders/actions/", post_action)
    app.router.add_get("/v3.0/orders/actions/", get_actions)
    app.router.add_get("/v3.0/marketplaces", get_marketplaces)
    app.router.add_post("/_sandbox/faults", control_faults)
    app.router.add_post("/_sandbox/orders", control_create_orders)
    app.router.add_get("/_sandbox/orders", control_orders)
    app.router.add_post("/_sandbox/orders/{order_id}/status", control_move)
    app.router.add_post("/_sandbox/advance", control_advance)
    app.router.add_get("/_sandbox/calls", control_calls)
    app.cleanup_ctx.append(_apply_actions)
    return app


def sandbox_state(app: web.Application) -> SandboxState:
    return app[STATE]


async def serve(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> web.AppRunner:
    """Start serving ``app``; returns the runner (``runner.addresses`` has the bound port)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner


def base_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}"

"""The Lengow sandbox: an HTTP server that answers like the Lengow API, for tests and demos.

Lengow routes: ``POST /access/get_token``, ``GET /v3.0/orders``, ``POST|GET
/v3.0/orders/actions/``, ``GET /v3.0/marketplaces``. Control routes under ``/_sandbox/`` create
and move orders and inject faults (500s, 429s with Retry-After, slow answers, expired tokens,
malformed orders). Not a production service.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import orjson
from aiohttp import web

from sandbox.marketplace import MARKETPLACE, MARKETPLACE_DOCUMENT, ActionRefused, Marketplace, now

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Faults:
    """Faults to inject into the next Lengow calls (control routes are never affected)."""

    statuses: list[int] = field(default_factory=list)
    retry_after: float = 1.0
    delays: list[float] = field(default_factory=list)
    malformed_orders: int = 0


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
    page_size: int = 100
    faults: Faults = field(default_factory=Faults)
    tokens: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)


STATE = web.AppKey("state", SandboxState)


def error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "code": status}}, status=status, headers=headers
    )


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
    return await handler(request)


def authenticated(request: web.Request) -> int:
    state = request.app[STATE]
    token = request.headers.get("Authorization", "")
    account = state.tokens.get(token)
    if account is None or account[1] <= now():
        raise web.HTTPUnauthorized(
            text='{"error": {"message": "Unauthorized access: invalid or expired token",'
            ' "code": 401}}',
            content_type="application/json",
        )
    return account[0]


def _account_param(request: web.Request, account_id: int) -> None:
    asked = request.query.get("account_id")
    if asked is not None and asked != str(account_id):
        raise web.HTTPForbidden(
            text='{"error": {"message": "account_id does not match the token", "code": 403}}',
            content_type="application/json",
        )


def _date(request: web.Request, name: str) -> datetime | None:
    value = request.query.get(name)
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise web.HTTPBadRequest(
            text=f'{{"error": {{"message": "{name} is not an ISO 8601 date", "code": 400}}}}',
            content_type="application/json",
        ) from None


async def get_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.content_type == "application/json":
        body = await request.json()
    else:
        body = dict(await request.post())
    for account in state.accounts:
        if (
            body.get("access_token") == account.access_token
            and body.get("secret") == account.secret
        ):
            token = secrets.token_hex(16)
            state.tokens[token] = (account.account_id, now() + state.token_ttl)
            return web.json_response(
                {"token": token, "account_id": account.account_id, "user_id": 1}
            )
    return error(400, "Invalid access token or secret")


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


async def list_orders(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _account_param(request, authenticated(request))
    if request.query.get("marketplace", MARKETPLACE) != MARKETPLACE:
        return web.json_response({"count": 0, "next": None, "previous": None, "results": []})
    orders = state.marketplace.query(
        updated_from=_date(request, "updated_from"),
        updated_to=_date(request, "updated_to"),
        order_date_from=_date(request, "marketplace_order_date_from"),
        order_date_to=_date(request, "marketplace_order_date_to"),
        marketplace_order_id=request.query.get("marketplace_order_id"),
        lengow_status=request.query.get("lengow_status"),
    )
    page = max(int(request.query.get("page", "1")), 1)
    size = min(max(int(request.query.get("page_size", str(state.page_size))), 1), 1000)
    chunk = orders[(page - 1) * size : page * size]
    results = [dict(order.raw) for order in chunk]
    for index in range(min(state.faults.malformed_orders, len(results))):
        results[index] = {**results[index], "updated_at": "yesterday-ish", "total_order": "n/a"}
        state.faults.malformed_orders -= 1

    def page_url(number: int) -> str:
        return str(request.url.update_query(page=str(number)))

    return web.json_response(
        dumps=_dumps,
        data={
            "count": len(orders),
            "next": page_url(page + 1) if page * size < len(orders) else None,
            "previous": page_url(page - 1) if page > 1 else None,
            "results": results,
        },
    )


async def post_action(request: web.Request) -> web.Response:
    state = request.app[STATE]
    account_id = authenticated(request)
    body = await request.json()
    if str(body.get("account_id")) != str(account_id):
        return error(403, "account_id does not match the token")
    try:
        action = state.marketplace.request_action(body, now())
    except ActionRefused as refused:
        return error(400, str(refused))
    return web.json_response(action.as_json(), status=201)


async def get_actions(request: web.Request) -> web.Response:
    state = request.app[STATE]
    _account_param(request, authenticated(request))
    found = list(state.marketplace.actions.values())
    if action_id := request.query.get("id"):
        found = [a for a in found if str(a.id) == action_id]
    if order_id := request.query.get("marketplace_order_id"):
        found = [a for a in found if a.order_id == order_id]
    results = [a.as_json() for a in found]
    return web.json_response(
        {"count": len(results), "next": None, "previous": None, "results": results}
    )


async def get_marketplaces(request: web.Request) -> web.Response:
    _account_param(request, authenticated(request))
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
    return web.json_response(dict(request.app[STATE].calls))


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
    page_size: int = 100,
) -> web.Application:
    app = web.Application(middlewares=[lengow_faults], client_max_size=2 * 1024 * 1024)
    app[STATE] = SandboxState(
        marketplace=marketplace or Marketplace(),
        accounts=accounts or [Account(1000, "sandbox-access-token", "sandbox-secret")],
        token_ttl=token_ttl,
        page_size=page_size,
    )
    app.router.add_post("/access/get_token", get_token)
    app.router.add_get("/v3.0/orders", list_orders)
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

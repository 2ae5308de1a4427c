"""HTTP adapter for the Lengow API, as Lengow's own plugins use it (../shared/lengow-api.md).

- Authentication: ``POST /access/get_token`` (form), then the bare token in ``Authorization``;
  renewed after 50 minutes, and once (with the call repeated once) on a 401 or 403.
- A client-side budget of calls per route and minute (:class:`RateBudget`), shared by every
  client of the process, so that polls, catch-ups, action checks and ``moi`` never reach
  Lengow's limit of about 500 calls per route and minute.
- GETs are retried on 5xx, 429, timeouts and network errors, with backoff (``Retry-After``
  honoured when present). A POST or PATCH is sent **at most once** per call: Lengow has no
  idempotency key, so a timeout or a 5xx after the request left raises
  :class:`LengowInDoubtError` and the caller must look before sending again. 530 is Lengow's
  permanent refusal ("logical error, bad input"), never retried.
- Pages: ``page`` + 1 at ``page_size`` <= 100 until ``next`` is null (``next`` is never
  followed as a URL); dates without fractional seconds.

The access token, the secret and the session token never appear in a log line or an
exception message.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx
import orjson
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from shared.logging import get_logger

log = get_logger(__name__)

#: Lengow's session token lives one hour; the plugins renew it after 50 minutes.
TOKEN_LIFETIME_SECONDS = 50 * 60
#: Lengow's largest page.
MAX_PAGE_SIZE = 100
#: Below this, a difference between Lengow's Date and our clock is the header's rounding.
CLOCK_RESOLUTION_SECONDS = 2.0

ORDERS_ROUTE = "/v3.0/orders"
MOI_ROUTE = "/v3.0/orders/moi/"
ACTIONS_ROUTE = "/v3.0/orders/actions/"
MARKETPLACES_ROUTE = "/v3.0/marketplaces"

#: Routes that share one rate counter at Lengow.
_SHARED_COUNTERS = {MOI_ROUTE: ORDERS_ROUTE}


class LengowError(Exception):
    """Lengow could not be used for this call."""


class LengowCredentialsError(LengowError):
    """The access token or secret is wrong: retrying will not help."""


class LengowRequestError(LengowError):
    """Lengow refused the request (4xx other than auth and rate limits, or 530)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Lengow answered {status}: {message}")
        self.status = status
        self.message = message


class LengowNotFoundError(LengowRequestError):
    """404: the page, order or route does not exist (any more)."""


class LengowRefusedError(LengowRequestError):
    """530, "logical error": Lengow refuses the request as given; sending it again fails too."""


class LengowUnavailableError(LengowError):
    """Lengow could not be reached, or kept failing; nothing was done on Lengow's side."""


class LengowInDoubtError(LengowError):
    """A POST or PATCH left, and no answer tells whether Lengow acted on it."""


class _TransientError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def lengow_date(moment: datetime) -> str:
    """ISO 8601 with its offset and no fractional seconds, as Lengow's clients send dates."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def counter_of(url: str) -> str:
    """The rate counter a call spends: its route, with ``moi`` counted as ``/v3.0/orders``."""
    route = url.split("?", 1)[0]
    return _SHARED_COUNTERS.get(route, route)


class RateBudget:
    """At most ``calls`` per counter in any ``window_seconds``, for every client that shares it.

    Calls wait for room instead of meeting Lengow's 429 (as the plugins'
    ``rateLimitingRequests`` do). A sliding window: a burst is followed by a pause, never by
    more than ``calls`` within one window. Background calls (marking orders imported, which
    Lengow counts with ``/v3.0/orders``) give way: they wait while a foreground call on the
    same counter is waiting or was made in the last ``BACKGROUND_GRACE_SECONDS``, so a
    100,000-order backlog of ``moi`` never slows a poll down.
    """

    BACKGROUND_GRACE_SECONDS = 2.0

    def __init__(
        self,
        calls: int,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if calls < 1:
            raise ValueError("a rate budget needs at least one call per window")
        self.calls = calls
        self.window = window_seconds
        self._clock = clock
        self._sent: dict[str, deque[float]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._foreground_waiting: dict[str, int] = {}
        self._foreground_last: dict[str, float] = {}
        self.waited_seconds = 0.0

    def delay(self, counter: str) -> float:
        """Seconds until the counter has room (0 when it has room now)."""
        sent = self._sent.setdefault(counter, deque())
        now = self._clock()
        while sent and sent[0] <= now - self.window:
            sent.popleft()
        if len(sent) < self.calls:
            return 0.0
        return sent[0] + self.window - now

    def _gives_way(self, counter: str) -> float:
        """Seconds a background call waits before looking again (0: it may go)."""
        if self._foreground_waiting.get(counter, 0):
            return self.BACKGROUND_GRACE_SECONDS
        since = self._clock() - self._foreground_last.get(counter, float("-inf"))
        return max(self.BACKGROUND_GRACE_SECONDS - since, 0.0)

    async def spend(self, counter: str, *, background: bool = False) -> None:
        """Wait until a call on ``counter`` is within the budget, and count it."""
        while background and (pause := self._gives_way(counter)) > 0:  # noqa: ASYNC110 - a clock, not an event
            await asyncio.sleep(pause)
        if not background:
            self._foreground_waiting[counter] = self._foreground_waiting.get(counter, 0) + 1
        try:
            async with self._locks.setdefault(counter, asyncio.Lock()):
                while (wait := self.delay(counter)) > 0:
                    self.waited_seconds += wait
                    await asyncio.sleep(wait)
                self._sent[counter].append(self._clock())
        finally:
            if not background:
                self._foreground_waiting[counter] -= 1
                self._foreground_last[counter] = self._clock()

    def used(self, counter: str) -> int:
        self.delay(counter)
        return len(self._sent.get(counter, ()))


def _error_message(response: httpx.Response, token: str | None) -> str:
    try:
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            message = str(body["error"].get("message"))
        elif isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
        else:
            message = response.text[:300]
    except ValueError:
        message = response.text[:300] or response.reason_phrase
    # Lengow names an expired token in its message ("Token: <token> is expired").
    return message.replace(token, "<token>") if token else message


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


def _results(body: Any) -> list[dict[str, Any]]:
    found = body.get("results") if isinstance(body, dict) else None
    return [item for item in found or [] if isinstance(item, dict)]


class LengowActions(Protocol):
    """What the action gateway asks of Lengow (``LengowClient``; a scripted Lengow in the
    gateway's unit tests)."""

    async def actions(self, **params: Any) -> list[dict[str, Any]]:
        """Every action matching the documented filters, all pages."""
        ...

    async def post_action(self, body: Mapping[str, Any]) -> Any:
        """Sent at most once: :class:`LengowInDoubtError` when it may have landed."""
        ...


class LengowOrders(Protocol):
    """What the polls ask of Lengow (``LengowClient``; a scripted Lengow in their unit
    tests)."""

    def lengow_time(self, monotonic: float, local: datetime) -> datetime: ...

    def order_pages(
        self,
        *,
        account_id: int,
        marketplace: str,
        updated_from: datetime,
        updated_to: datetime,
        page_size: int = MAX_PAGE_SIZE,
        max_restarts: int = 5,
    ) -> AsyncIterator[list[dict[str, Any]]]: ...

    async def order(
        self, account_id: int, marketplace: str, order_id: str
    ) -> dict[str, Any] | None: ...


class LengowImports(Protocol):
    """What the import marker asks of Lengow (``LengowClient``; a scripted Lengow in its unit
    tests)."""

    async def mark_imported(
        self,
        *,
        account_id: int,
        marketplace: str,
        marketplace_order_id: str,
        merchant_id: str,
        background: bool = False,
    ) -> Any: ...


class LengowClient:
    """One Lengow account's session: token, budget, retries for reads, one send for writes."""

    def __init__(
        self,
        base_url: str,
        access_token: SecretStr,
        secret: SecretStr,
        *,
        budget: RateBudget,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._access_token = access_token
        self._secret = secret
        self._budget = budget
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._owns_http = http is None
        self._max_attempts = max_attempts
        self._backoff = wait_random_exponential(multiplier=backoff_seconds, max=max_backoff_seconds)
        self._token: str | None = None
        self._token_expires = 0.0
        self._authenticating = asyncio.Lock()
        self.account_id: int | None = None
        self.tokens_obtained = 0
        #: Lengow's ``Date`` in its last answer, and when (monotonic) it was read.
        self._lengow_date: tuple[datetime, float] | None = None

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    # --- Session ---------------------------------------------------------------------------

    async def _authenticate(self) -> str:
        try:
            response = await self._http.post(
                "/access/get_token",
                data={
                    "access_token": self._access_token.get_secret_value(),
                    "secret": self._secret.get_secret_value(),
                },
            )
        except (httpx.TimeoutException, httpx.NetworkError) as exc:
            raise _TransientError(f"{type(exc).__name__} getting a Lengow token") from exc
        self._read_clock(response)
        if response.status_code in (400, 401, 403):
            raise LengowCredentialsError(
                f"Lengow refused the credentials ({response.status_code}: "
                f"{_error_message(response, None)}): check the access token and secret"
            )
        self._raise_for_transient(response)
        body = response.json()
        self._token = str(body["token"])
        self.account_id = int(body["account_id"])
        self._token_expires = time.monotonic() + TOKEN_LIFETIME_SECONDS
        self.tokens_obtained += 1
        log.info("lengow.authenticated", account_id=self.account_id)
        return self._token

    async def _session_token(self) -> str:
        async with self._authenticating:
            if self._token is None or time.monotonic() >= self._token_expires:
                return await self._authenticate()
            return self._token

    @staticmethod
    def _raise_for_transient(response: httpx.Response) -> None:
        if response.status_code == 429:
            raise _TransientError("rate limited (429)", _retry_after(response))
        if response.status_code >= 500 and response.status_code != 530:
            raise _TransientError(f"server error ({response.status_code})", _retry_after(response))

    def _refusal(self, response: httpx.Response) -> LengowRequestError:
        message = _error_message(response, self._token)
        if response.status_code == 530:
            return LengowRefusedError(530, message)
        if response.status_code == 404:
            return LengowNotFoundError(404, message)
        return LengowRequestError(response.status_code, message)

    async def _exchange(
        self, method: str, url: str, *, background: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One call within the budget; a rejected token is renewed and the call repeated once
        (a 401 or 403 means Lengow did not act on it)."""
        for renewal in (False, True):
            token = await self._session_token()
            await self._budget.spend(counter_of(url), background=background)
            response = await self._http.request(
                method, url, headers={"Authorization": token}, **kwargs
            )
            self._read_clock(response)
            if response.status_code in (401, 403) and not renewal:
                log.info("lengow.token_rejected", status=response.status_code)
                if self._token == token:
                    self._token = None  # expired or revoked: get a new one, once
                continue
            break
        return response

    def _read_clock(self, response: httpx.Response) -> None:
        stamp = response.headers.get("Date")
        if not stamp:
            return
        try:
            server = email.utils.parsedate_to_datetime(stamp)
        except (TypeError, ValueError):
            return
        self._lengow_date = (server, time.monotonic())

    def lengow_time(self, monotonic: float, local: datetime) -> datetime:
        """What Lengow's clock read at ``monotonic`` (when ours read ``local``), from the Date
        of its last answer; ``local`` itself before any answer, or when the two agree within
        the header's whole seconds. A poller whose clock runs ahead must not move its
        watermark past changes Lengow has not made yet."""
        if self._lengow_date is None:
            return local
        date, read_at = self._lengow_date
        lengow = date + timedelta(seconds=monotonic - read_at)
        if abs((local - lengow).total_seconds()) < CLOCK_RESOLUTION_SECONDS:
            return local
        return lengow

    # --- Reads: retried -----------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, _TransientError) and failure.retry_after is not None:
            return failure.retry_after
        return float(self._backoff(state))

    async def _get_once(self, url: str, params: Mapping[str, Any] | None) -> Any:
        try:
            response = await self._exchange("GET", url, params=params)
        except (httpx.TimeoutException, httpx.NetworkError) as exc:
            raise _TransientError(f"{type(exc).__name__} calling Lengow") from exc
        self._raise_for_transient(response)
        if response.status_code >= 400:
            raise self._refusal(response)
        # orjson: a 3-day catch-up decodes hundreds of pages.
        return orjson.loads(response.content)

    async def get(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        """One GET, retried on timeouts, network errors, 5xx and 429 (a read cannot double)."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_TransientError),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "lengow.retrying",
                url=url,
                attempt=state.attempt_number,
                reason=str(state.outcome.exception()) if state.outcome else None,
                wait_seconds=round(state.upcoming_sleep, 2),
            ),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._get_once(url, params)
        except _TransientError as exc:
            raise LengowUnavailableError(
                f"Lengow still failing after {self._max_attempts} attempts: {exc}"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def pages(
        self, url: str, params: Mapping[str, Any], *, page_size: int = MAX_PAGE_SIZE
    ) -> AsyncIterator[tuple[int | None, list[dict[str, Any]]]]:
        """Every page of a listing: ``page`` + 1 until ``next`` is null, as the plugins do.

        Yields ``(count, results)``; a page that no longer exists (404 past the first) ends
        the listing, since the list shrank while it was read."""
        query = {**params, "page_size": min(page_size, MAX_PAGE_SIZE)}
        page = 1
        while True:
            try:
                body = await self.get(url, {**query, "page": page})
            except LengowNotFoundError:
                if page == 1:
                    raise
                log.info("lengow.page_gone", url=url, page=page)
                return
            count = body.get("count") if isinstance(body, dict) else None
            yield count, _results(body)
            if not isinstance(body, dict) or not body.get("next"):
                return
            page += 1

    # --- Writes: sent once ---------------------------------------------------------------

    async def send(self, method: str, url: str, *, background: bool = False, **kwargs: Any) -> Any:
        """A POST or PATCH, sent at most once (Lengow has no idempotency key).

        Raises :class:`LengowUnavailableError` when the request certainly did not act (it
        could not be sent, or was rate-limited), :class:`LengowInDoubtError` when it may
        have, and a :class:`LengowRequestError` when Lengow refused it."""
        try:
            response = await self._exchange(method, url, background=background, **kwargs)
        except _TransientError as exc:  # the token could not be had: nothing was sent
            raise LengowUnavailableError(str(exc)) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise LengowUnavailableError(f"{type(exc).__name__}: not sent to Lengow") from exc
        except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
            raise LengowInDoubtError(
                f"{type(exc).__name__} after the {method} was sent: Lengow may have acted"
            ) from exc
        if response.status_code == 429:
            raise LengowUnavailableError("rate limited (429): not accepted by Lengow")
        if response.status_code >= 500 and response.status_code != 530:
            raise LengowInDoubtError(
                f"Lengow answered {response.status_code} to the {method}: it may have acted"
            )
        if response.status_code >= 400:
            raise self._refusal(response)
        return orjson.loads(response.content) if response.content else None

    # --- Lengow's routes -------------------------------------------------------------------

    async def order_pages(
        self,
        *,
        account_id: int,
        marketplace: str,
        updated_from: datetime,
        updated_to: datetime,
        page_size: int = MAX_PAGE_SIZE,
        max_restarts: int = 5,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page of orders updated in the window.

        Pages are offsets into a list that moves: an order updated while the window is read
        leaves it, and every later order shifts one place, so one of them would fall between
        two pages. When the total ``count`` changes between pages, or a page is gone, the
        window is read again from its first page (unchanged orders are then recognised by
        their fingerprint)."""
        params = {
            "account_id": account_id,
            "marketplace": marketplace,
            "updated_from": lengow_date(updated_from),
            "updated_to": lengow_date(updated_to),
        }
        for restart in range(max_restarts + 1):
            expected: int | None = None
            shifted = False
            read = 0
            async for count, results in self.pages(ORDERS_ROUTE, params, page_size=page_size):
                if expected is None:
                    expected = count
                elif count != expected:
                    shifted = True
                    break
                read += len(results)
                yield results
            if expected is not None and not shifted and read < expected:
                shifted = True  # the last pages were gone: the list shrank
            if not shifted:
                return
            log.info("lengow.window_shifted", restart=restart + 1, was=expected)
        raise LengowUnavailableError(
            f"the orders kept changing while being read ({max_restarts} restarts)"
        )

    async def order(
        self, account_id: int, marketplace: str, order_id: str
    ) -> dict[str, Any] | None:
        """One order as Lengow has it now (the orders list filtered on its id), or None."""
        found = await self.get(
            ORDERS_ROUTE,
            {
                "account_id": account_id,
                "marketplace": marketplace,
                "marketplace_order_id": order_id,
            },
        )
        results = found.get("results") if isinstance(found, dict) else None
        return results[0] if results else None

    async def actions(self, **params: Any) -> list[dict[str, Any]]:
        """Every action matching the documented filters, all pages."""
        found: list[dict[str, Any]] = []
        async for _, results in self.pages(ACTIONS_ROUTE, params):
            found.extend(results)
        return found

    async def post_action(self, body: Mapping[str, Any]) -> Any:
        """Form fields, as every plugin sends them (JSON for this route is unsettled)."""
        return await self.send("POST", ACTIONS_ROUTE, data=form_fields(body))

    async def mark_imported(
        self,
        *,
        account_id: int,
        marketplace: str,
        marketplace_order_id: str,
        merchant_id: str,
        background: bool = False,
    ) -> Any:
        return await self.send(
            "PATCH",
            MOI_ROUTE,
            background=background,
            json={
                "account_id": account_id,
                "marketplace": marketplace,
                "marketplace_order_id": marketplace_order_id,
                "merchant_order_id": [merchant_id],
            },
        )

    async def marketplaces(self, account_id: int) -> dict[str, Any]:
        body = await self.get(MARKETPLACES_ROUTE, {"account_id": account_id})
        if not isinstance(body, dict):
            raise LengowRequestError(200, "the marketplaces document is not an object")
        return body


def form_fields(body: Mapping[str, Any]) -> dict[str, str]:
    """An action's fields as form values: booleans as ``true``/``false``, nothing empty
    (the plugins drop empty optional arguments)."""
    fields: dict[str, str] = {}
    for key, value in body.items():
        if value is None or value == "":
            continue
        fields[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return fields

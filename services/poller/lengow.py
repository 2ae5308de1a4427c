"""HTTP adapter for the Lengow API: authentication, retries, pagination.

The access token and secret are only ever sent to ``/access/get_token``; they and the session
token never appear in a log line or an exception message.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

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

#: Lengow's session token lives one hour; renew it comfortably before.
TOKEN_LIFETIME_SECONDS = 50 * 60


class LengowError(Exception):
    """Lengow could not be used for this call."""


class LengowCredentialsError(LengowError):
    """The access token or secret is wrong: retrying will not help."""


class LengowRequestError(LengowError):
    """Lengow refused the request (4xx other than auth and rate limits)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Lengow answered {status}: {message}")
        self.status = status
        self.message = message


class LengowUnavailableError(LengowError):
    """Lengow kept failing (timeouts, 5xx, 429) after every retry."""


class _TransientError(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return str(body["error"]["message"])
    except Exception:
        return response.text[:200] or response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


class LengowClient:
    """One Lengow account's session: token handling, retries with backoff and jitter."""

    def __init__(
        self,
        base_url: str,
        access_token: SecretStr,
        secret: SecretStr,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff_seconds: float = 1.0,
        max_backoff_seconds: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self._access_token = access_token
        self._secret = secret
        self._http = http or httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self._owns_http = http is None
        self._max_attempts = max_attempts
        self._backoff = wait_random_exponential(multiplier=backoff_seconds, max=max_backoff_seconds)
        self._token: str | None = None
        self._token_expires = 0.0
        self.account_id: int | None = None
        self.tokens_obtained = 0

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    def _wait(self, state: RetryCallState) -> float:
        failure = state.outcome.exception() if state.outcome else None
        if isinstance(failure, _TransientError) and failure.retry_after is not None:
            return failure.retry_after
        return float(self._backoff(state))

    async def _authenticate(self) -> str:
        response = await self._http.post(
            "/access/get_token",
            data={
                "access_token": self._access_token.get_secret_value(),
                "secret": self._secret.get_secret_value(),
            },
        )
        if response.status_code in (400, 401, 403):
            raise LengowCredentialsError(
                f"Lengow refused the credentials ({response.status_code}: "
                f"{_error_message(response)}): check the access token and secret"
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
        if self._token is None or time.monotonic() >= self._token_expires:
            return await self._authenticate()
        return self._token

    @staticmethod
    def _raise_for_transient(response: httpx.Response) -> None:
        if response.status_code == 429:
            raise _TransientError("rate limited (429)", _retry_after(response))
        if response.status_code >= 500:
            raise _TransientError(f"server error ({response.status_code})", _retry_after(response))

    async def _once(self, method: str, url: str, **kwargs: Any) -> Any:
        try:
            for renewal in (False, True):
                token = await self._session_token()
                response = await self._http.request(
                    method, url, headers={"Authorization": token}, **kwargs
                )
                if response.status_code in (401, 403) and not renewal:
                    log.info("lengow.token_rejected", status=response.status_code)
                    self._token = None  # expired or revoked: get a new one, once
                    continue
                break
        except (httpx.TimeoutException, httpx.NetworkError) as exc:
            raise _TransientError(f"{type(exc).__name__} calling Lengow") from exc
        self._raise_for_transient(response)
        if response.status_code >= 400:
            raise LengowRequestError(response.status_code, _error_message(response))
        # orjson: a 3-day catch-up decodes a hundred pages of a thousand orders.
        return orjson.loads(response.content)

    async def request(self, method: str, url: str, **kwargs: Any) -> Any:
        """One Lengow call, retried on timeouts, network errors, 5xx and 429."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_TransientError),
            reraise=True,
            before_sleep=lambda state: log.warning(
                "lengow.retrying",
                url=url.split("?")[0],
                attempt=state.attempt_number,
                reason=str(state.outcome.exception()) if state.outcome else None,
                wait_seconds=round(state.upcoming_sleep, 2),
            ),
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._once(method, url, **kwargs)
        except _TransientError as exc:
            raise LengowUnavailableError(
                f"Lengow still failing after {self._max_attempts} attempts: {exc}"
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def order_pages(
        self,
        *,
        account_id: int,
        marketplace: str,
        updated_from: datetime,
        updated_to: datetime,
        page_size: int = 100,
        max_restarts: int = 5,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Every page of orders updated in the window, following Lengow's ``next`` links.

        Pages are offsets into a list that moves: an order updated while the window is read
        leaves it, and every later order shifts one place, so one of them would fall between
        two pages. When the total ``count`` changes between pages the window is read again
        from its first page (unchanged orders are then recognised by their fingerprint).
        """
        params: dict[str, Any] = {
            "account_id": account_id,
            "marketplace": marketplace,
            "updated_from": updated_from.isoformat(),
            "updated_to": updated_to.isoformat(),
            "page_size": page_size,
            "page": 1,
        }
        for attempt in range(max_restarts + 1):
            url: str | None = "/v3.0/orders"
            page_params: dict[str, Any] | None = params
            expected: int | None = None
            shifted = False
            while url is not None:
                body = await self.request("GET", url, params=page_params)
                count = body.get("count")
                if expected is None:
                    expected = count
                elif count != expected:
                    shifted = True
                    break
                results = body.get("results") or []
                yield [order for order in results if isinstance(order, dict)]
                url, page_params = body.get("next"), None
            if not shifted:
                return
            log.info("lengow.window_shifted", restart=attempt + 1, was=expected, now=count)
        raise LengowUnavailableError(
            f"the orders kept changing while being read ({max_restarts} restarts)"
        )

    async def post_action(self, body: dict[str, Any]) -> Any:
        return await self.request("POST", "/v3.0/orders/actions/", json=body)

    async def get_actions(self, **params: Any) -> Any:
        return await self.request("GET", "/v3.0/orders/actions/", params=params)

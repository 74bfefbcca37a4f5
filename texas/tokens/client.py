"""Posting a token request to an identity provider, and reading its answer.

One request costs the caller at most TEXAS_TOKEN_TIMEOUT_SECONDS, whatever the provider does:
connection errors, 5xx and 429 are retried with jittered exponential backoff (429 and 503 wait
as long as `Retry-After` says), but only while the next attempt can start before the deadline;
otherwise the last failure is the answer. Answers are read up to a size limit and must be an
OAuth success (RFC 6749 section 5.1) or error (section 5.2); anything else is a 502.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple

import aiohttp
import orjson

from texas.errors import IdentityProviderFailed, IdentityProviderRefused, JwksError
from texas.introspection.jwks import read_limited
from texas.ops import telemetry

log = logging.getLogger(__name__)

MAX_ANSWER_BYTES = 256 * 1024
_MAX_ERROR_TEXT = 500  # an upstream error_description is passed on, but not a novel


class Issued(NamedTuple):
    """A token as the provider issued it; `expires_in` in seconds from when it arrived."""

    access_token: str
    token_type: str
    expires_in: float


@dataclass(frozen=True)
class Retries:
    """Backoff before attempt n+1: uniform in [0, min(cap, base * 2**(n-1))] (full jitter)."""

    attempts: int = 5
    base: float = 0.2
    cap: float = 2.0

    def backoff(self, attempt: int, draw: float) -> float:
        return draw * min(self.cap, self.base * 2.0 ** (attempt - 1))


class TokenClient:
    """The identity providers' token endpoints, over the app's shared ClientSession."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        timeout: float,
        *,
        retries: Retries = Retries(),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.session = session
        self.timeout = timeout
        self.retries = retries
        self._sleep = sleep
        self._draw = draw

    def deadline(self) -> float:
        """The event loop time by which a request started now must be answered."""
        return asyncio.get_running_loop().time() + self.timeout

    async def request(
        self, provider: str, endpoint: str, form: Callable[[], dict[str, str]], deadline: float
    ) -> Issued:
        """The token, or a GrantError: IdentityProviderRefused (its 4xx OAuth error) or
        IdentityProviderFailed (502). `form` builds each attempt's body afresh."""
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            attempt += 1
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._attempt(provider, endpoint, form())
            except TimeoutError:
                raise IdentityProviderFailed(
                    f"The identity provider {provider} did not answer within {self.timeout:g} s.",
                    retryable=True,
                ) from None
            except IdentityProviderFailed as failure:
                if not failure.retryable or attempt >= self.retries.attempts:
                    raise
                wait = failure.retry_after
                if wait is None:
                    wait = self.retries.backoff(attempt, self._draw())
                if loop.time() + wait >= deadline:
                    raise  # no attempt fits before the deadline: answer now, not at it
                telemetry.inc_grant_retry(provider)
                log.info("retrying the token request to %s in %.2f s (attempt %d)", provider, wait, attempt)
                await self._sleep(wait)

    async def _attempt(self, provider: str, endpoint: str, form: dict[str, str]) -> Issued:
        started = time.perf_counter()
        result = "error"
        try:
            issued = await self._post(provider, endpoint, form)
            result = "ok"
            return issued
        except IdentityProviderRefused:
            result = "refused"
            raise
        finally:
            telemetry.observe_grant_upstream(provider, result, time.perf_counter() - started)

    async def _post(self, provider: str, endpoint: str, form: dict[str, str]) -> Issued:
        try:
            async with self.session.post(
                endpoint,
                data=form,
                headers={"Accept": "application/json"},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=None),  # the caller's deadline governs
            ) as response:
                status = response.status
                retry_after = _retry_after(response.headers.get("Retry-After"))
                body = await read_limited(response, MAX_ANSWER_BYTES)
        except JwksError:
            raise IdentityProviderFailed(
                f"The identity provider {provider} answered more than {MAX_ANSWER_BYTES // 1024} KiB."
            ) from None
        except aiohttp.ClientError as e:
            raise IdentityProviderFailed(
                f"The identity provider {provider} could not be reached ({type(e).__name__}).", retryable=True
            ) from None
        log.debug("token endpoint of %s answered HTTP %d", provider, status)
        return _read_answer(provider, status, body, retry_after)


def _read_answer(provider: str, status: int, body: bytes, retry_after: float | None) -> Issued:
    if status == 200:
        issued = _success(body)
        if issued is None:
            raise IdentityProviderFailed(
                f"The identity provider {provider} answered HTTP 200 with something that is not a token."
            )
        return issued
    if status == 429 or 500 <= status <= 599:
        raise IdentityProviderFailed(
            f"The identity provider {provider} answered HTTP {status}.",
            retryable=True,
            retry_after=retry_after,
        )
    if 400 <= status <= 499:
        error = _oauth_error(body)
        if error is not None:
            code, description = error
            raise IdentityProviderRefused(
                status,
                code,
                description or f"The identity provider {provider} refused the request ({code}).",
            )
        raise IdentityProviderFailed(
            f"The identity provider {provider} answered HTTP {status} without an OAuth error."
        )
    raise IdentityProviderFailed(f"The identity provider {provider} answered HTTP {status}.")


def _json_object(body: bytes) -> dict[str, object] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _success(body: bytes) -> Issued | None:
    data = _json_object(body)
    if data is None:
        return None
    token, token_type, expires_in = (
        data.get("access_token"),
        data.get("token_type", "Bearer"),
        data.get("expires_in"),
    )
    if isinstance(expires_in, str) and expires_in.isdigit():  # Entra ID v1 sends a string
        expires_in = int(expires_in)
    if not isinstance(token, str) or not token or not isinstance(token_type, str):
        return None
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return None
    if not math.isfinite(expires_in) or expires_in <= 0:
        return None
    # RFC 6749: the type is case-insensitive; the contract answers "Bearer".
    return Issued(token, "Bearer" if token_type.lower() == "bearer" else token_type, float(expires_in))


def _oauth_error(body: bytes) -> tuple[str, str | None] | None:
    data = _json_object(body)
    if data is None:
        return None
    code, description = data.get("error"), data.get("error_description")
    if not isinstance(code, str) or not code:
        return None
    if not isinstance(description, str) or not description.strip():
        description = None
    return code[:100], description[:_MAX_ERROR_TEXT] if description else None


def _retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date), None if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())

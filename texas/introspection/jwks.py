"""A provider's remote key set: fetch, refresh, cooldown, one flight at a time.

- a request whose `kid` is held never waits on the network;
- an unknown `kid` triggers one refresh, shared by every request waiting on it, and at most one
  per `min_refresh` window; inside a closed window it is answered at once and one trailing
  refresh is scheduled for the window's end, so a genuine new key is seen within `min_refresh`;
- a `kid` still unknown right after a refresh is remembered as unknown for `min_refresh`;
- a failed, slow, malformed or empty fetch never replaces the keys held;
- keys not confirmed by a successful fetch for `max_stale` are dropped;
- fetches are conditional (ETag / Last-Modified; a 304 counts only as the answer to a
  conditional request) and honour `Cache-Control: max-age`, clamped to [min_refresh,
  refresh]; failures retry with a backoff from 1 s up to `refresh`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp

from texas.errors import JwksError
from texas.introspection.keys import KeySnapshot, parse_jwks
from texas.ops import telemetry

log = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 512 * 1024
NEGATIVE_CACHE_SIZE = 4096
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)", re.IGNORECASE)
_ACCEPT = "application/jwk-set+json, application/json;q=0.9"


@dataclass(frozen=True)
class JwksSettings:
    refresh: float = 300
    min_refresh: float = 30
    fetch_timeout: float = 5
    max_stale: float = 86400


async def read_limited(response: aiohttp.ClientResponse, limit: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The body, or JwksError once it passes `limit` bytes (never buffers more)."""
    if response.content_length is not None and response.content_length > limit:
        raise JwksError(f"the document is larger than {limit} bytes")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise JwksError(f"the document is larger than {limit} bytes")
    return bytes(body)


class RemoteJwks:
    """The keys of one JWKS URL, kept fresh in the background."""

    def __init__(
        self,
        provider: str,
        locate: Callable[[], Awaitable[str]],
        session: aiohttp.ClientSession,
        settings: JwksSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.provider = provider
        self._locate = locate
        self._session = session
        self._settings = settings
        self._clock = clock
        self._wall_clock = wall_clock

        self._snapshot: KeySnapshot | None = None
        self._confirmed_at: float | None = None  # clock() of the last 200/304
        self._confirmed_wall: float | None = None
        self._last_fetch_started = -float("inf")
        self._etag: str | None = None
        self._last_modified: str | None = None
        self._max_age: float | None = None
        self.last_error: str | None = None

        self._inflight: asyncio.Task[bool] | None = None
        self._trailing: asyncio.Task[None] | None = None
        self._unknown: OrderedDict[str, float] = OrderedDict()  # kid -> forget after
        telemetry.set_jwks_state(provider, 0, None)  # a series from the start: "no keys yet"

    # --- what requests see -------------------------------------------------------------------

    def current(self) -> KeySnapshot | None:
        """The keys held, or None when there are none or they have gone stale."""
        snapshot = self._snapshot
        if snapshot is not None and self._clock() - self._confirmed_at > self._settings.max_stale:  # type: ignore[operator]
            log.warning(
                "dropping the keys of %s: not confirmed by a successful fetch for %g s",
                self.provider,
                self._settings.max_stale,
            )
            self._drop()
            return None
        return snapshot

    def age(self) -> float | None:
        """Seconds since the last successful fetch, None before the first."""
        return None if self._confirmed_at is None else self._clock() - self._confirmed_at

    def holding(self, kid: str) -> KeySnapshot | None:
        """The snapshot held when it has `kid`, else None: the answer of `keys_for` when that
        needs no wait, without a coroutine."""
        snapshot = self.current()
        return snapshot if snapshot is not None and snapshot.has_kid(kid) else None

    async def keys_for(self, kid: str) -> KeySnapshot | None:
        """A snapshot that holds `kid` if the provider publishes it, refreshing as the policy
        allows; otherwise the snapshot held (or None), and the caller answers unknown_key."""
        snapshot = self.current()
        if snapshot is None or snapshot.has_kid(kid):
            return snapshot
        now = self._clock()
        forget_at = self._unknown.get(kid)
        if forget_at is not None:
            if now < forget_at:
                return snapshot
            del self._unknown[kid]

        in_flight = self._inflight is not None and not self._inflight.done()
        if in_flight or now - self._last_fetch_started >= self._settings.min_refresh:
            await self.refresh("unknown_kid")
            snapshot = self.current()
            if snapshot is not None and not snapshot.has_kid(kid):
                self._remember_unknown(kid)
            return snapshot
        self._schedule_trailing()
        return snapshot

    # --- fetching -----------------------------------------------------------------------------

    async def refresh(self, trigger: str) -> bool:
        """Fetch now, or join the fetch under way; True when the keys were (re)confirmed."""
        if self._inflight is None or self._inflight.done():
            self._last_fetch_started = self._clock()
            self._inflight = asyncio.create_task(self._fetch(trigger))
        # shield: a cancelled waiter must not cancel the fetch the others share
        return await asyncio.shield(self._inflight)

    async def run(self, *, initial_done: bool) -> None:
        """The background loop: periodic refreshes, and retries with backoff after failures."""
        ok = initial_done
        backoff = 1.0
        while True:
            if ok:
                backoff = 1.0
                delay = self._next_refresh_delay()
            else:
                delay, backoff = backoff, min(backoff * 2, self._settings.refresh)
            await asyncio.sleep(delay)
            ok = await self.refresh("periodic" if ok else "retry")

    async def close(self) -> None:
        for task in (self._trailing, self._inflight):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _next_refresh_delay(self) -> float:
        s = self._settings
        if self._max_age is None:
            return s.refresh
        return min(max(self._max_age, s.min_refresh), s.refresh)

    def _schedule_trailing(self) -> None:
        if self._trailing is not None and not self._trailing.done():
            return
        now = self._clock()
        wait = self._last_fetch_started + self._settings.min_refresh - now
        self._trailing = asyncio.create_task(self._trail(max(wait, 0.0), seen=now))

    async def _trail(self, wait: float, seen: float) -> None:
        await asyncio.sleep(wait)
        # A fetch that started after the kid was seen (an unknown kid right at the window's
        # opening, a periodic refresh) has looked for it already: a second would break the
        # one-fetch-per-window promise.
        if self._last_fetch_started < seen:
            await self.refresh("trailing")

    async def _fetch(self, trigger: str) -> bool:
        try:
            async with asyncio.timeout(self._settings.fetch_timeout):
                url = await self._locate()
                result = await self._get(url)
        except TimeoutError:
            return self._failed(trigger, f"no answer within {self._settings.fetch_timeout:g} s")
        except JwksError as e:
            return self._failed(trigger, str(e))
        except aiohttp.ClientError as e:
            return self._failed(trigger, f"the request failed ({type(e).__name__})")
        except Exception as e:  # fail closed: a surprise keeps the old keys, never kills the loop
            log.exception("unexpected error fetching the JWKS of %s", self.provider)
            return self._failed(trigger, f"unexpected error ({type(e).__name__})")
        telemetry.inc_jwks_fetch(self.provider, trigger, result)
        self.last_error = None
        return True

    async def _get(self, url: str) -> str:
        headers = {"Accept": _ACCEPT}
        if self._snapshot is not None:
            if self._etag:
                headers["If-None-Match"] = self._etag
            if self._last_modified:
                headers["If-Modified-Since"] = self._last_modified
        conditional = len(headers) > 1
        async with self._session.get(url, headers=headers, allow_redirects=False) as response:
            if response.status == 304:
                # Only an answer to our validator confirms the keys held; a 304 to a plain GET
                # (a confused server or proxy) would keep stale keys alive past max_stale.
                if not conditional:
                    raise JwksError("the JWKS answered 304 to a request that was not conditional")
                self._confirm(response.headers)
                return "304"
            if response.status != 200:
                raise JwksError(f"the JWKS answered HTTP {response.status}")
            document = await read_limited(response)
        snapshot = parse_jwks(document, self._snapshot, source=f"{self.provider} JWKS")
        self._etag = response.headers.get("ETag")
        self._last_modified = response.headers.get("Last-Modified")
        self._snapshot = snapshot
        self._confirm(response.headers)
        return "200"

    def _confirm(self, headers: Mapping[str, str]) -> None:
        self._confirmed_at = self._clock()
        self._confirmed_wall = self._wall_clock()
        self._max_age = _max_age(headers.get("Cache-Control", ""))
        telemetry.set_jwks_state(self.provider, len(self._snapshot or ()), self._confirmed_wall)

    def _failed(self, trigger: str, reason: str) -> bool:
        telemetry.inc_jwks_fetch(self.provider, trigger, "error")
        self.last_error = reason
        held = "keeping the keys held" if self._snapshot is not None else "no keys held yet"
        log.warning("JWKS fetch for %s failed: %s; %s", self.provider, reason, held)
        return False

    def _drop(self) -> None:
        self._snapshot = None
        self._etag = self._last_modified = None
        telemetry.set_jwks_state(self.provider, 0, self._confirmed_wall)

    def _remember_unknown(self, kid: str) -> None:
        self._unknown[kid] = self._clock() + self._settings.min_refresh
        self._unknown.move_to_end(kid)
        while len(self._unknown) > NEGATIVE_CACHE_SIZE:
            self._unknown.popitem(last=False)


def _max_age(cache_control: str) -> float | None:
    if "no-cache" in cache_control.lower() or "no-store" in cache_control.lower():
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None

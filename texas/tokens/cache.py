"""The cache of tokens texas has been issued.

- Keys are SHA-256 digests of what identifies a token: (provider, target, resource,
  authorization_details) for machine tokens, (provider, target, SHA-256 of the user token) for
  exchanged ones. A user token is never kept.
- An entry is served until its lifetime minus a margin (120 s; half the lifetime for tokens
  that live 120 s or less), and an exchanged one never past the user token's `exp`.
- Concurrent identical misses share one call to the identity provider (one task per key);
  `skip_cache` fetches afresh and the new token replaces the entry. Failures are never stored.
- Refresh ahead (machine tokens): inside the margin the cached token is still served while one
  background renewal per key runs, until a floor of min(30 s, margin / 2) before expiry.
- Outage tolerance: when the provider cannot be reached, times out or answers 5xx/429, a cached
  token with at least 30 s left (and its user token still valid) is served instead.
- Bounded in entries and bytes; the least recently used entry leaves first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import orjson

from texas.errors import GrantError, IdentityProviderFailed
from texas.ops import telemetry
from texas.tokens.client import Issued

log = logging.getLogger(__name__)

MARGIN_SECONDS = 120.0
STALE_MIN_SECONDS = 30.0  # the least life left on a token served through an outage
# Per entry beyond the token itself: key, Entry tuple, OrderedDict slot (about 300 bytes
# measured with sys.getsizeof on CPython 3.11; rounded up).
_ENTRY_OVERHEAD = 400

Fetch = Callable[[], Awaitable[Issued]]


class Entry(NamedTuple):
    access_token: str
    token_type: str
    expires_at: float  # wall clock
    renew_at: float  # fresh until here; past it, fetched again (machine: in the background)
    ahead_until: float  # machine tokens: served while a renewal runs until here
    not_after: float  # never served from here on (expires_at, or the user token's exp)

    @property
    def useful_until(self) -> float:
        """After this the entry can be served neither fresh, nor ahead, nor through an outage."""
        return max(self.renew_at, self.ahead_until, min(self.expires_at - STALE_MIN_SECONDS, self.not_after))

    @property
    def size(self) -> int:
        return len(self.access_token) + len(self.token_type) + _ENTRY_OVERHEAD


class Served(NamedTuple):
    access_token: str
    token_type: str
    expires_in: int
    source: str  # fetched, hit, ahead (hit that started a renewal), stale


def machine_key(provider: str, target: str, resource: str | None, details: object) -> bytes:
    parts = ("machine", provider, target, resource, details)
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).digest()


def exchange_key(provider: str, target: str, user_token: str) -> bytes:
    user = hashlib.sha256(user_token.encode("utf-8", "surrogatepass")).hexdigest()
    return hashlib.sha256(orjson.dumps(("exchange", provider, target, user))).digest()


def entry_for(issued: Issued, now: float, *, user_exp: float | None, refresh_ahead: bool) -> Entry:
    lifetime = issued.expires_in
    margin = MARGIN_SECONDS if lifetime > MARGIN_SECONDS else lifetime / 2
    expires_at = now + lifetime
    not_after = expires_at if user_exp is None else min(expires_at, user_exp)
    renew_at = min(expires_at - margin, not_after)
    ahead_until = (
        min(expires_at - min(STALE_MIN_SECONDS, margin / 2), not_after) if refresh_ahead else renew_at
    )
    return Entry(issued.access_token, issued.token_type, expires_at, renew_at, ahead_until, not_after)


class GrantCache:
    def __init__(self, max_entries: int, max_bytes: int, *, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._bytes = 0
        self._flights: dict[bytes, asyncio.Task[Entry]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def peek(self, key: bytes) -> Entry | None:
        return self._entries.get(key)

    async def get(
        self,
        key: bytes,
        fetch: Fetch,
        *,
        endpoint: str,
        provider: str,
        skip_cache: bool = False,
        refresh_ahead: bool = False,
        user_exp: float | None = None,
    ) -> Served:
        """A token for `key`: cached, joined to a fetch under way, or fetched now."""
        now = self.clock()
        entry = self._entries.get(key)
        if entry is not None and not skip_cache:
            if now < entry.renew_at:
                self._entries.move_to_end(key)
                telemetry.inc_grant_cache(endpoint, "hit")
                return _served(entry, now, "hit")
            if refresh_ahead and now < entry.ahead_until:
                self._entries.move_to_end(key)
                telemetry.inc_grant_cache(endpoint, "ahead")
                self._fly(
                    key, fetch, user_exp=user_exp, refresh_ahead=True, provider=provider, background=True
                )
                return _served(entry, now, "ahead")
        telemetry.inc_grant_cache(endpoint, "skip" if skip_cache else "miss")
        flight = self._fly(key, fetch, user_exp=user_exp, refresh_ahead=refresh_ahead, provider=provider)
        try:
            fetched = await asyncio.shield(flight)
        except IdentityProviderFailed as failure:
            stale = self._stale(key, failure)
            if stale is None:
                raise
            telemetry.inc_grant_stale(provider)
            log.warning("serving a cached token of %s through an outage: %s", provider, failure.description)
            return stale
        # a token just issued is answered even when too short-lived to be cached
        return _served(fetched, self.clock(), "fetched")

    def _stale(self, key: bytes, failure: IdentityProviderFailed) -> Served | None:
        """A cached token to serve through an outage: at least 30 s left, user token valid."""
        if not failure.retryable:
            return None
        entry = self._entries.get(key)
        now = self.clock()
        if entry is None or entry.expires_at - now < STALE_MIN_SECONDS or now >= entry.not_after:
            return None
        return _served(entry, now, "stale")

    def _fly(
        self,
        key: bytes,
        fetch: Fetch,
        *,
        user_exp: float | None,
        refresh_ahead: bool,
        provider: str,
        background: bool = False,
    ) -> asyncio.Task[Entry]:
        """The fetch under way for `key`, or a new one: one flight per key at a time."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight

        async def fly() -> Entry:
            issued = await fetch()
            now = self.clock()
            entry = entry_for(issued, now, user_exp=user_exp, refresh_ahead=refresh_ahead)
            if now < entry.renew_at:
                self._put(key, entry)
            else:
                self._remove(key)
            return entry

        flight = asyncio.create_task(fly(), name="token-fetch")
        self._flights[key] = flight

        def landed(task: asyncio.Task[Entry]) -> None:
            if self._flights.get(key) is task:
                del self._flights[key]
            if task.cancelled():
                return
            error = task.exception()  # retrieved here, so an unawaited renewal never warns
            if error is not None and not isinstance(error, GrantError):
                log.error("unexpected error fetching a token from %s", provider, exc_info=error)
            if background:
                telemetry.inc_grant_refresh(provider, "error" if error is not None else "ok")
                if isinstance(error, GrantError):
                    log.warning("background renewal of a %s token failed: %s", provider, error.description)

        flight.add_done_callback(landed)
        return flight

    def _put(self, key: bytes, entry: Entry) -> None:
        if self.max_entries == 0 or entry.size > self.max_bytes:
            return
        self._remove(key)
        self._entries[key] = entry
        self._bytes += entry.size
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.size
        telemetry.set_grant_cache(len(self._entries), self._bytes)

    def _remove(self, key: bytes) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry.size
            telemetry.set_grant_cache(len(self._entries), self._bytes)

    def sweep(self) -> None:
        """Drop entries that can no longer be served, not even through an outage."""
        now = self.clock()
        for key in [k for k, e in self._entries.items() if now >= e.useful_until]:
            self._remove(key)

    async def close(self) -> None:
        flights = list(self._flights.values())
        for flight in flights:
            flight.cancel()
        for flight in flights:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await flight


def _served(entry: Entry, now: float, source: str) -> Served:
    return Served(entry.access_token, entry.token_type, max(0, round(entry.expires_at - now)), source)

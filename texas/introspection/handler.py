"""POST /api/v1/introspect: parse the request, pick the provider, shape the verdict.

Always HTTP 200 with a JSON object (413 for bodies over the limit): `active: true` plus every
claim verbatim, or `active: false` with `error` (a sentence) and `reason` (a stable code).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

import orjson
from aiohttp import web

from texas import bodies
from texas.errors import BadRequest, KeysUnavailable, TokenError
from texas.introspection import levels
from texas.introspection.batch import Batch
from texas.introspection.cache import Entry, TokenCache
from texas.introspection.keys import KeySnapshot
from texas.introspection.providers import Provider, Providers
from texas.introspection.validation import (
    Compact,
    Verified,
    check_size,
    peek_issuer,
    split,
    verify_compact,
)
from texas.ops import telemetry

_FIELDS = ("identity_provider", "token", "level")


class IntrospectRequest(NamedTuple):
    identity_provider: str | None
    token: str
    level: str | None  # normalised


def parse_request(content_type: str, body: bytes) -> IntrospectRequest:
    """The request's three fields, from a JSON or form body; anything else is a bad request."""
    data = bodies.read_fields(content_type, body, _FIELDS)
    provider = _string(data, "identity_provider")
    token = _string(data, "token")
    level = _string(data, "level")
    if not token:
        raise BadRequest("The request has no token.")
    if level:
        level = levels.normalise(level)
    elif "level" in data:
        # an unset variable must not switch the level check off
        raise BadRequest("The request's level is empty; leave the field out when no level is required.")
    return IntrospectRequest(provider or None, token, level)


def _string(data: Mapping[str, object], name: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise BadRequest(f"The request field {name} must be a string.")


def inactive_body(error: TokenError) -> bytes:
    return orjson.dumps({"active": False, "error": error.message, "reason": error.reason, **error.extra})


def active_body(verified: Verified) -> bytes:
    """`{"active": true, <claims>}` spliced from the signed payload bytes, so every value
    (2**70, 1.0, escapes) is returned exactly as signed; a claim named `active` forces a
    re-encode without it, since the verdict must win."""
    if "active" in verified.claims:
        # read again exactly: orjson (fastjson) reads integers past 64 bits as floats
        claims = {k: v for k, v in json.loads(verified.payload).items() if k != "active"}
        return json.dumps({"active": True, **claims}, separators=(",", ":")).encode()
    inner = verified.payload.strip()[1:].lstrip()  # the payload parsed as an object: starts "{"
    if inner.startswith(b"}"):
        return b'{"active":true}'
    return b'{"active":true,' + inner


class Verdict(NamedTuple):
    provider: str  # the provider's name, or "none" before one is chosen (a metrics label)
    outcome: str  # "active" or the reason code
    body: bytes


class _KeysWanted(NamedTuple):
    """A token whose kid the provider's key set does not hold: the one case that waits."""

    provider: Provider
    key: bytes  # in the verified-token cache
    compact: Compact
    now: float


class Introspector:
    """The verdict for one request, given the providers and the verified-token cache."""

    def __init__(
        self, providers: Providers, cache: TokenCache, clock: Callable[[], float] = time.time
    ) -> None:
        self.providers = providers
        self.cache = cache
        self.clock = clock
        self.batch = Batch()

    async def __call__(self, request: IntrospectRequest) -> Verdict:
        """Decided with the other requests of this event-loop iteration (batch.py); only a
        token whose kid is not held waits on, for the keys."""
        decided = await self.batch.run(self.decide, request)
        if isinstance(decided, Verdict):
            return decided
        provider, compact = decided.provider, decided.compact
        try:
            snapshot = await provider.jwks.keys_for(compact.kid)
            acr, body = self._verify(provider, decided.key, compact, snapshot, decided.now)
            return _active(provider.name, acr, body, request.level)
        except TokenError as e:
            return Verdict(provider.name, e.reason, inactive_body(e))

    def decide(self, request: IntrospectRequest) -> Verdict | _KeysWanted:
        """The verdict, without waiting: from the cache, or by verifying with the keys held."""
        name = "none"
        token = request.token
        try:
            check_size(token)
            if request.identity_provider is None:
                provider = self.providers.by_issuer(peek_issuer(token))
            else:
                provider = self.providers.get(request.identity_provider)
            name = provider.name
            now = self.clock()
            key = self.cache.key(name, token)
            entry = self.cache.get(key)
            if entry is not None and self._entry_holds(provider, key, entry, now):
                acr, body = entry.acr, entry.body
            else:
                compact = split(token)
                snapshot = provider.jwks.holding(compact.kid)
                if snapshot is None and provider.policy is not None:
                    return _KeysWanted(provider, key, compact, now)
                acr, body = self._verify(provider, key, compact, snapshot, now)
            return _active(name, acr, body, request.level)
        except TokenError as e:
            return Verdict(name, e.reason, inactive_body(e))

    def _verify(
        self, provider: Provider, key: bytes, compact: Compact, snapshot: KeySnapshot | None, now: float
    ) -> tuple[object, bytes]:
        """A token not in the cache: verified, and cached. Returns its acr and answer."""
        policy = provider.policy
        if snapshot is None or policy is None:
            raise KeysUnavailable(f"The signing keys of {provider.name} are not available right now.")
        verified = verify_compact(compact, snapshot, policy, now)
        body = active_body(verified)
        acr = verified.claims.get("acr")
        self.cache.put(key, Entry(body, verified.key, verified.times, acr))
        return acr, body

    def _entry_holds(self, provider: Provider, key: bytes, entry: Entry, now: float) -> bool:
        """A cached verdict holds while its key is held and its time claims hold; an entry
        whose time has run out is dropped and its verdict raised, one whose key has gone is
        dropped and the token verified afresh."""
        snapshot = provider.jwks.current()
        if snapshot is not None and snapshot.holds(entry.key):
            try:
                entry.times.check(provider.policy.leeway, now)  # type: ignore[union-attr]
            except TokenError:
                self.cache.discard(key)
                raise
            return True
        self.cache.discard(key)
        return False


def _active(provider: str, acr: object, body: bytes, level: str | None) -> Verdict:
    """The active verdict of a verified token, once it meets the level asked for."""
    if level is not None:
        levels.require(acr, level)
    return Verdict(provider, "active", body)


INTROSPECTOR = web.AppKey("introspector", Introspector)
_TOO_LARGE = BadRequest(bodies.TOO_LARGE)


async def handle(request: web.Request) -> web.Response:
    try:
        body = bodies.decode(request.headers.get("Content-Encoding", ""), await request.read())
    except (web.HTTPRequestEntityTooLarge, bodies.BodyTooLarge):
        telemetry.inc_introspection("none", _TOO_LARGE.reason)
        return _json(inactive_body(_TOO_LARGE), status=413)
    except TokenError as e:
        telemetry.inc_introspection("none", e.reason)
        return _json(inactive_body(e))
    try:
        parsed = parse_request(request.content_type, body)
    except TokenError as e:
        verdict = Verdict("none", e.reason, inactive_body(e))
    else:
        verdict = await request.app[INTROSPECTOR](parsed)
    telemetry.inc_introspection(verdict.provider, verdict.outcome)
    return _json(verdict.body)


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json")

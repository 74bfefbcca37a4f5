"""POST /api/v1/introspect: parse the request, pick the provider, shape the verdict.

Always HTTP 200 with a JSON object (413 for bodies over the limit): `active: true` plus every
claim verbatim, or `active: false` with `error` (a sentence) and `reason` (a stable code).
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from typing import NamedTuple
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from texas.errors import BadRequest, KeysUnavailable, TokenError
from texas.introspection import levels
from texas.introspection.cache import Entry, TokenCache
from texas.introspection.fastjson import read_unrepeated
from texas.introspection.providers import Provider, Providers
from texas.introspection.validation import Verified, check_size, peek_issuer, split, verify_compact
from texas.ops import telemetry

MAX_BODY_BYTES = 1024 * 1024
_FIELDS = ("identity_provider", "token", "level")


class IntrospectRequest(NamedTuple):
    identity_provider: str | None
    token: str
    level: str | None  # normalised


def parse_request(content_type: str, body: bytes) -> IntrospectRequest:
    """The request's three fields, from a JSON or form body; anything else is a bad request."""
    data: Mapping[str, object]
    if content_type == "application/json":
        data = _parse_json(body)
    elif content_type == "application/x-www-form-urlencoded":
        data = _parse_form(body)
    else:
        raise BadRequest("The request must be application/json or application/x-www-form-urlencoded.")

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


class _Repeating(dict[str, object]):
    """A JSON object that gave some member names more than once."""

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        counts = Counter(name for name, _ in pairs)
        self.repeated = frozenset(name for name, count in counts.items() if count > 1)


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else _Repeating(pairs)


def _reject_constant(name: str) -> object:
    raise ValueError(name)


# One parser that sees repeated names (orjson, like most, keeps the last silently). Only the
# top level counts: a member that texas does not read may hold any object.
_JSON = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_reject_constant)
_FAST_DEPTH = 32  # bodies nested deeper are read by the exact parser alone


def _parse_json(body: bytes) -> dict[str, object]:
    # orjson when it shows that no name repeats (fastjson), else the exact parser:
    # 17,000 instructions instead of 36,000 under callgrind for an ID-porten request
    data = read_unrepeated(body, _FAST_DEPTH)
    if data is not None:
        if not isinstance(data, dict):
            raise BadRequest("The request body must be a JSON object.")
        return data
    try:
        data = _JSON.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    if isinstance(data, _Repeating):
        for name in _FIELDS:
            if name in data.repeated:
                raise BadRequest(f"The request repeats the field {name}.")
    return data


def _parse_form(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=32)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("The request body is not a valid form.") from None
    data: dict[str, str] = {}
    for name, value in pairs:
        if name in data and name in _FIELDS:
            raise BadRequest(f"The request repeats the field {name}.")
        data[name] = value
    return data


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


class Introspector:
    """The verdict for one request, given the providers and the verified-token cache."""

    def __init__(
        self, providers: Providers, cache: TokenCache, clock: Callable[[], float] = time.time
    ) -> None:
        self.providers = providers
        self.cache = cache
        self.clock = clock

    async def __call__(self, request: IntrospectRequest) -> Verdict:
        # One coroutine: the awaits below wait only for a key set that does not hold the
        # token's kid; a layer per step (cache, verify, keys) cost about 11,000 instructions
        # a request under callgrind for coroutines that never suspend.
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
            cache = self.cache
            key = cache.key(name, token)
            entry = cache.get(key)
            if entry is not None and self._entry_holds(provider, key, entry, now):
                body, acr = entry.body, entry.acr
            else:
                compact = split(token)
                policy = provider.policy
                jwks = provider.jwks
                snapshot = jwks.holding(compact.kid)
                if snapshot is None and policy is not None:
                    snapshot = await jwks.keys_for(compact.kid)
                if snapshot is None or policy is None:
                    raise KeysUnavailable(f"The signing keys of {name} are not available right now.")
                verified = verify_compact(compact, snapshot, policy, now)
                body = active_body(verified)
                acr = verified.claims.get("acr")
                cache.put(key, Entry(body, verified.key, verified.times, acr))
            if request.level is not None:
                levels.require(acr, request.level)
        except TokenError as e:
            return Verdict(name, e.reason, inactive_body(e))
        return Verdict(name, "active", body)

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


INTROSPECTOR = web.AppKey("introspector", Introspector)


_TOO_LARGE = BadRequest(f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB.")


class _TooLarge(Exception):
    pass


def decode_body(encoding: str, body: bytes) -> bytes:
    """The body without its Content-Encoding, never more than MAX_BODY_BYTES (a small gzip
    body can inflate to gigabytes)."""
    if not encoding:  # the usual case, first
        return body
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(wbits=31)
    elif encoding == "deflate":
        inflater = zlib.decompressobj(wbits=15)
    else:
        raise BadRequest("The request body's Content-Encoding is not one of gzip, deflate or identity.")
    try:
        decoded = inflater.decompress(body, MAX_BODY_BYTES + 1)
        if len(decoded) > MAX_BODY_BYTES or inflater.unconsumed_tail:
            raise _TooLarge
        if not inflater.eof:
            raise zlib.error("truncated")
        if inflater.unused_data:  # junk or a second gzip member: not one stream
            raise zlib.error("trailing data")
    except zlib.error:
        raise BadRequest("The request body does not decode as its Content-Encoding says.") from None
    return decoded


async def handle(request: web.Request) -> web.Response:
    try:
        body = decode_body(request.headers.get("Content-Encoding", ""), await request.read())
    except (web.HTTPRequestEntityTooLarge, _TooLarge):
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

"""POST /api/v1/introspect: parse the request, pick the provider, shape the verdict.

Always HTTP 200 with a JSON object (413 for bodies over the limit): `active: true` plus every
claim verbatim, or `active: false` with `error` (a sentence) and `reason` (a stable code).
"""

from __future__ import annotations

import contextlib
import json
import time
import zlib
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import parse_qsl

import orjson
from aiohttp import web

from texas.errors import BadRequest, KeysUnavailable, TokenError
from texas.introspection import levels
from texas.introspection.cache import Entry, TokenCache
from texas.introspection.providers import Provider, Providers
from texas.introspection.validation import Verified, peek_issuer, split, verify_compact
from texas.ops import telemetry

MAX_BODY_BYTES = 1024 * 1024
_FIELDS = ("identity_provider", "token", "level")


class IntrospectRequest(NamedTuple):
    identity_provider: str | None
    token: str
    level: str | None  # normalised


def parse_request(content_type: str, body: bytes) -> IntrospectRequest:
    """The request's three fields, from a JSON or form body; anything else is a bad request."""
    if content_type == "application/json":
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise BadRequest("The request body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise BadRequest("The request body must be a JSON object.")
        if not _cannot_repeat_a_member(body, data):
            _refuse_repeated_fields(body)
    elif content_type == "application/x-www-form-urlencoded":
        data = _parse_form(body)
    else:
        raise BadRequest("The request must be application/json or application/x-www-form-urlencoded.")

    fields: dict[str, str | None] = {}
    for name in _FIELDS:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"The request field {name} must be a string.")
        fields[name] = value or None
    token = fields["token"]
    if token is None:
        raise BadRequest("The request has no token.")
    level = fields["level"]
    return IntrospectRequest(
        identity_provider=fields["identity_provider"],
        token=token,
        level=levels.normalise(level) if level is not None else None,
    )


def _cannot_repeat_a_member(body: bytes, data: dict[str, object]) -> bool:
    """A cheap proof that the JSON body repeats no member (orjson would read it last-wins).

    Every member has a quoted name, and here every value is a string: m members give at least
    4m quotes, exactly 4m when no string holds an escaped quote. So with string values only and
    exactly 4 quotes per distinct name there are no more members than names. Anything else
    (other value types, escaped quotes) takes the slow, exact check.
    """
    return body.count(b'"') == 4 * len(data) and all(type(v) is str for v in data.values())


def _refuse_repeated_fields(body: bytes) -> None:
    def pairs(items: list[tuple[str, object]]) -> dict[str, object]:
        names = [name for name, _ in items]
        for name in _FIELDS:
            if names.count(name) > 1:
                raise BadRequest(f"The request repeats the field {name}.")
        return dict(items)

    # orjson has read the body already; this pass only looks for repeated fields
    with contextlib.suppress(ValueError, RecursionError):
        json.loads(body, object_pairs_hook=pairs)


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
        claims = {k: v for k, v in verified.claims.items() if k != "active"}
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
        name = "none"
        try:
            if request.identity_provider is None:
                provider = self.providers.by_issuer(peek_issuer(request.token))
            else:
                provider = self.providers.get(request.identity_provider)
            name = provider.name
            body, acr = await self._verify(provider, request.token)
            if request.level is not None:
                levels.require(acr, request.level)
        except TokenError as e:
            return Verdict(name, e.reason, inactive_body(e))
        return Verdict(name, "active", body)

    async def _verify(self, provider: Provider, token: str) -> tuple[bytes, object]:
        """The active answer and the token's `acr`, from the cache or by verifying."""
        now = self.clock()
        key = self.cache.key(provider.name, token)
        entry = self.cache.get(key)
        if entry is not None:
            snapshot = provider.jwks.current()
            if snapshot is not None and snapshot.holds(entry.key):
                try:
                    entry.times.check(provider.policy.leeway, now)  # type: ignore[union-attr]
                except TokenError:
                    self.cache.discard(key)
                    raise
                return entry.body, entry.acr
            self.cache.discard(key)

        compact = split(token)
        policy = provider.policy
        snapshot = await provider.jwks.keys_for(compact.kid) if policy is not None else None
        if snapshot is None or policy is None:
            raise KeysUnavailable(f"The signing keys of {provider.name} are not available right now.")
        verified = verify_compact(compact, snapshot, policy, now)
        body = active_body(verified)
        acr = verified.claims.get("acr")
        self.cache.put(key, Entry(body=body, key=verified.key, times=verified.times, acr=acr))
        return body, acr


INTROSPECTOR = web.AppKey("introspector", Introspector)


_TOO_LARGE = BadRequest(f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB.")


class _TooLarge(Exception):
    pass


def decode_body(encoding: str, body: bytes) -> bytes:
    """The body without its Content-Encoding, never more than MAX_BODY_BYTES (a small gzip
    body can inflate to gigabytes)."""
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

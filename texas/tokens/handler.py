"""POST /api/v1/token and POST /api/v1/token/exchange: parse the request, answer the token or
the error.

Answers: 200 `{"access_token", "token_type", "expires_in"}`; 400
`invalid_request` for the caller's mistakes; the identity provider's own 4xx OAuth error as it
came; 502 `server_error` when it could not be reached or answered nonsense. Never a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from texas import bodies
from texas.config import ALIASES, PROVIDER_NAMES
from texas.errors import GrantError, IdentityProviderFailed, InvalidTokenRequest, TokenError
from texas.ops import telemetry
from texas.tokens.cache import Served
from texas.tokens.service import ExchangeRequest, MachineRequest, Tokens

log = logging.getLogger(__name__)

TOKENS = web.AppKey("tokens", Tokens)
TOKEN_PATH = "/api/v1/token"
EXCHANGE_PATH = "/api/v1/token/exchange"

_MACHINE_FIELDS = ("identity_provider", "target", "resource", "authorization_details", "skip_cache")
_EXCHANGE_FIELDS = ("identity_provider", "target", "user_token", "skip_cache")
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}  # RFC 6749 section 5.1


def _fields(content_type: str, body: bytes, names: tuple[str, ...]) -> Mapping[str, Any]:
    try:
        return bodies.read_fields(content_type, body, names)
    except TokenError as e:
        raise InvalidTokenRequest(e.message) from None


def _text(data: Mapping[str, Any], name: str, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        if required:
            raise InvalidTokenRequest(f"The request has no {name}.")
        return None
    if not isinstance(value, str):
        raise InvalidTokenRequest(f"The request field {name} must be a string.")
    return value


def _flag(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise InvalidTokenRequest(f"The request field {name} must be true or false.")


def _details(data: Mapping[str, Any]) -> list[Any] | None:
    """RFC 9396 authorization_details: a JSON array of objects, or (in a form) that array as a
    JSON string. Passed on as given; texas does not read inside it."""
    value = data.get("authorization_details")
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise InvalidTokenRequest("The request field authorization_details is not valid JSON.") from None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidTokenRequest("The request field authorization_details must be a JSON array of objects.")
    return value


def parse_machine(content_type: str, body: bytes) -> MachineRequest:
    data = _fields(content_type, body, _MACHINE_FIELDS)
    return MachineRequest(
        identity_provider=_text(data, "identity_provider", required=True),  # type: ignore[arg-type]
        target=_text(data, "target", required=True),  # type: ignore[arg-type]
        resource=_text(data, "resource", required=False),
        authorization_details=_details(data),
        skip_cache=_flag(data, "skip_cache"),
    )


def parse_exchange(content_type: str, body: bytes) -> ExchangeRequest:
    data = _fields(content_type, body, _EXCHANGE_FIELDS)
    return ExchangeRequest(
        identity_provider=_text(data, "identity_provider", required=True),  # type: ignore[arg-type]
        target=_text(data, "target", required=True),  # type: ignore[arg-type]
        user_token=_text(data, "user_token", required=True),  # type: ignore[arg-type]
        skip_cache=_flag(data, "skip_cache"),
    )


def token_body(served: Served) -> bytes:
    return orjson.dumps(
        {
            "access_token": served.access_token,
            "token_type": served.token_type,
            "expires_in": served.expires_in,
        }
    )


def error_body(error: GrantError) -> bytes:
    return orjson.dumps({"error": error.error, "error_description": error.description})


def _outcome(error: GrantError) -> str:
    if isinstance(error, InvalidTokenRequest):
        return "invalid_request"
    if isinstance(error, IdentityProviderFailed):
        return "server_error"
    return "refused"


def _endpoint(
    name: str,
    path: str,
    parse: Callable[[str, bytes], MachineRequest | ExchangeRequest],
    answer: Callable[[Tokens, Any], Awaitable[tuple[str, Served]]],
) -> Callable[[web.Request], Awaitable[web.Response]]:
    internal_errors = telemetry.internal_errors(path)

    async def handle(request: web.Request) -> web.Response:
        provider = "none"
        try:
            try:
                body = bodies.decode(request.headers.get("Content-Encoding", ""), await request.read())
            except (web.HTTPRequestEntityTooLarge, bodies.BodyTooLarge):
                raise InvalidTokenRequest(bodies.TOO_LARGE) from None
            except TokenError as e:
                raise InvalidTokenRequest(e.message) from None
            parsed = parse(request.content_type, body)
            provider = _provider_label(parsed.identity_provider)
            provider, served = await answer(request.app[TOKENS], parsed)
        except GrantError as e:
            outcome = _outcome(e)
            if outcome == "server_error":
                log.warning("token request (%s, %s) failed: %s", name, provider, e.description)
            elif outcome == "refused":
                log.info("token request (%s, %s) refused: HTTP %d %s", name, provider, e.status, e.error)
            telemetry.inc_token_request(name, provider, outcome)
            return _json(error_body(e), e.status)
        except Exception as e:  # the contract has no 500: a fault of texas's own is a 502 too
            # the formatters (ops/logs.py) keep the traceback's frames and types, never messages
            log.error("internal error answering a token request: %s", type(e).__name__, exc_info=e)
            internal_errors.inc()
            telemetry.inc_token_request(name, provider, "server_error")
            failure = IdentityProviderFailed("texas failed to handle the token request.")
            return _json(error_body(failure), failure.status)
        telemetry.inc_token_request(name, provider, "ok")
        return _json(token_body(served), 200)

    return handle


def _provider_label(requested: str) -> str:
    """A metrics label from a fixed set, never the caller's text."""
    name = ALIASES.get(requested, requested)
    return name if name in PROVIDER_NAMES else "none"


def _json(body: bytes, status: int) -> web.Response:
    return web.Response(body=body, status=status, content_type="application/json", headers=_NO_STORE)


token = _endpoint("token", TOKEN_PATH, parse_machine, lambda tokens, r: tokens.machine(r))
exchange = _endpoint("exchange", EXCHANGE_PATH, parse_exchange, lambda tokens, r: tokens.exchange(r))

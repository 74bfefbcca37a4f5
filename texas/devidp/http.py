"""The dev identity provider over HTTP (see issuer.py for what it is and why).

    GET  /{provider}/.well-known/openid-configuration
    GET  /{provider}/jwks                 public keys only, each with kid, alg and use
    POST /{provider}/token                the OAuth token endpoint (grants.py): a form body,
                                          application/x-www-form-urlencoded, as RFC 6749 says;
                                          a JSON body instead mints a dev token (below)
         {"claims": {...}, "level": "...", "expires_in": 3600}
                                          (all optional; a claim set to null is left out)
    POST /rotate                          new signing key; the previous ones stay published
    GET  /api/config                      providers, issuers, audiences (for the page)
    POST /api/introspect                  forwarded to the service's /api/v1/introspect,
    POST /api/token                       /api/v1/token and
    POST /api/token/exchange              /api/v1/token/exchange, so the page needs no CORS
    GET  /                                the page; its files are under /static/

One path, two bodies: the service and every OAuth client send a form, so a form is always the
real grant; JSON (or no body) is the dev mint that `texas token`, the page and scripts use.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from texas.devidp.assertions import OAuthError
from texas.devidp.grants import TokenEndpoint
from texas.devidp.issuer import (
    AUDIENCES,
    DEFAULT_EXPIRES_IN,
    DEFAULT_PID,
    LEVELS,
    PROVIDERS,
    DevIdentityProvider,
    DevIdpError,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
IDP_KEY = web.AppKey("devidp", DevIdentityProvider)
TOKEN_ENDPOINT_KEY = web.AppKey("devidp_token_endpoint", TokenEndpoint)
SERVICE_URL_KEY = web.AppKey("devidp_service_url", str)
SESSION_KEY = web.AppKey("devidp_session", aiohttp.ClientSession)
FORM = "application/x-www-form-urlencoded"
# The page's calls to the service, by the dev IdP's path: the service's path.
FORWARDED = {
    "/api/introspect": "/api/v1/introspect",
    "/api/token": "/api/v1/token",
    "/api/token/exchange": "/api/v1/token/exchange",
}
# Token answers are never stored by a cache on the way (RFC 6749 §5.1).
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _provider(request: web.Request) -> str:
    provider = request.match_info["provider"]
    if provider not in PROVIDERS:
        raise web.HTTPNotFound(
            text=json.dumps({"error": f"Unknown provider; choose one of {', '.join(PROVIDERS)}."}),
            content_type="application/json",
        )
    return provider


async def _discovery(request: web.Request) -> web.Response:
    return web.json_response(request.app[IDP_KEY].discovery(_provider(request)))


async def _jwks(request: web.Request) -> web.Response:
    _provider(request)
    body = json.dumps(request.app[IDP_KEY].jwks()).encode()
    # An ETag lets the service's conditional fetches (304) run against the dev IdP too.
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/jwk-set+json", headers=headers)


async def _read_json_object(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as e:
        raise DevIdpError("The request body is not valid JSON.") from e
    if not isinstance(data, dict):
        raise DevIdpError("The request body must be a JSON object.")
    return data


async def _token(request: web.Request) -> web.Response:
    provider = _provider(request)
    if request.content_type == FORM:
        return await _grant(request, provider)
    try:
        data = await _read_json_object(request)
        claims = data.get("claims") or {}
        if not isinstance(claims, dict):
            raise DevIdpError("claims must be a JSON object.")
        minted = request.app[IDP_KEY].mint(provider, claims, data.get("level"), data.get("expires_in"))
    except DevIdpError as e:
        return _error(400, str(e))
    return web.json_response(minted.as_dict(), headers={"Cache-Control": "no-store"})


async def _grant(request: web.Request, provider: str) -> web.Response:
    """The OAuth token endpoint: form parameters in, a token or an RFC 6749 §5.2 error out."""
    try:
        form = await request.post()
        params: dict[str, str] = {}
        for name in form:
            values = form.getall(name)
            if len(values) != 1 or not isinstance(values[0], str):
                raise OAuthError("invalid_request", f"{name} must be given once, as text.")
            params[name] = values[0]
        if "grant_type" not in params:  # `curl -d '{...}'` sends JSON as a form
            raise OAuthError(
                "invalid_request",
                "The request needs grant_type; to mint a dev token, send JSON "
                "(Content-Type: application/json).",
            )
        answer = request.app[TOKEN_ENDPOINT_KEY].answer(provider, params)
    except OAuthError as e:
        log.info("dev identity provider: %s token request refused: %s", provider, e.error)
        return web.json_response(e.as_dict(), status=e.status, headers=NO_STORE)
    except ValueError:  # undecodable bytes or a malformed body
        error = OAuthError("invalid_request", "The body is not a readable form.")
        return web.json_response(error.as_dict(), status=400, headers=NO_STORE)
    return web.json_response(answer, headers=NO_STORE)


async def _rotate(request: web.Request) -> web.Response:
    idp = request.app[IDP_KEY]
    idp.rotate()
    return web.json_response({"kid": idp.current_kid, "published": idp.kids})


async def _config(request: web.Request) -> web.Response:
    idp = request.app[IDP_KEY]
    return web.json_response(
        {
            "providers": [{"name": p, "issuer": idp.issuer(p), "audience": AUDIENCES[p]} for p in PROVIDERS],
            "levels": list(LEVELS),
            "default_pid": DEFAULT_PID,
            "default_expires_in": DEFAULT_EXPIRES_IN,
            "alg": idp.alg,
            "kid": idp.current_kid,
            "introspect_url": _service(request, "/api/introspect"),
            "token_url": _service(request, "/api/token"),
            "exchange_url": _service(request, "/api/token/exchange"),
        }
    )


def _service(request: web.Request, path: str) -> str | None:
    base = request.app.get(SERVICE_URL_KEY)
    return f"{base}{FORWARDED[path]}" if base else None


async def _forward(request: web.Request) -> web.Response:
    """The page's call, forwarded as it is to the service; the answer comes back as it is."""
    url = _service(request, request.path)
    if not url:
        return _error(503, "No texas service is attached to this dev identity provider.")
    body = await request.read()
    content_type = request.headers.get("Content-Type", "application/json")
    try:
        async with request.app[SESSION_KEY].post(
            url, data=body, headers={"Content-Type": content_type}
        ) as resp:
            answer = await resp.read()
            return web.Response(
                body=answer,
                status=resp.status,
                content_type=resp.content_type or "application/json",
            )
    except (aiohttp.ClientError, TimeoutError):
        return _error(502, f"The texas service at {url} did not answer.")


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(
        STATIC_DIR / "index.html",
        headers={
            "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
            "Cache-Control": "no-cache",
        },
    )


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    app[SESSION_KEY] = session
    yield
    await session.close()


def create_devidp_app(
    idp: DevIdentityProvider,
    service_url: str | None = None,
    *,
    token_lifetimes: Mapping[str, int] | None = None,
) -> web.Application:
    """The dev IdP as an aiohttp app; `service_url` is the service's base URL, for the page;
    `token_lifetimes` overrides the granted tokens' lifetimes (see TokenEndpoint)."""
    app = web.Application()
    app[IDP_KEY] = idp
    app[TOKEN_ENDPOINT_KEY] = TokenEndpoint(idp, lifetimes=token_lifetimes)
    if service_url:
        app[SERVICE_URL_KEY] = service_url.rstrip("/")
    app.cleanup_ctx.append(_client_session)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC_DIR)
    app.router.add_get("/api/config", _config)
    for path in FORWARDED:
        app.router.add_post(path, _forward)
    app.router.add_post("/rotate", _rotate)
    app.router.add_get("/{provider}/.well-known/openid-configuration", _discovery)
    app.router.add_get("/{provider}/jwks", _jwks)
    app.router.add_post("/{provider}/token", _token)
    return app

"""A strict local authorization server for the token endpoints' tests.

`AuthServer` is the fake issuer (discovery, JWKS) plus a token endpoint per provider at
`<issuer>/token`, which checks everything texas sends the way a real provider would, and more
strictly: the form's exact fields for each grant, the assertion's signature against the app's
public key, its `iss`/`sub`/`aud`, a lifetime of at most 120 s and a `jti` never seen before.
Any deviation is answered 400 `invalid_client`/`invalid_grant` and noted in `violations`, which
every test expects empty unless it provoked one. Every call is counted; faults come on cue
(`script` per call, then `mode`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import pytest
from aiohttp import web
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

from tests.support import PROVIDERS, FakeIssuer, make_key, public_jwk

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUBJECT_TYPE = "urn:ietf:params:oauth:token-type:jwt"

CLIENT_IDS = {
    "maskinporten": "mp-client-1",
    "azuread": "9f5c0d5e-0000-4000-8000-00000000c11e",
    "tokenx": "dev-gcp:team:app",
}
JWK_VARIABLE = {
    "maskinporten": "MASKINPORTEN_CLIENT_JWK",
    "azuread": "AZURE_APP_JWK",
    "tokenx": "TOKEN_X_PRIVATE_JWK",
}
CLIENT_ID_VARIABLE = {
    "maskinporten": "MASKINPORTEN_CLIENT_ID",
    "azuread": "AZURE_APP_CLIENT_ID",
    "tokenx": "TOKEN_X_CLIENT_ID",
}
ENDPOINT_VARIABLE = {
    "maskinporten": "MASKINPORTEN_TOKEN_ENDPOINT",
    "azuread": "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT",
    "tokenx": "TOKEN_X_TOKEN_ENDPOINT",
}
ALG = {"maskinporten": "RS256", "azuread": "ES256", "tokenx": "EdDSA"}  # one key type each


def app_key(provider: str) -> RSAKey | ECKey | OKPKey:
    """The app's private key at `provider` (what NAIS would hand it)."""
    return make_key(ALG[provider], f"app-{provider}")


def private_jwk(provider: str) -> str:
    data = app_key(provider).as_dict(private=True)
    data["kid"] = f"app-{provider}-kid"
    return json.dumps(data)


@dataclass
class Call:
    provider: str
    form: dict[str, str]
    claims: dict[str, Any] | None  # the verified assertion's claims
    at: float


@dataclass
class TokenEndpoint:
    """One provider's token endpoint behaviour; tests change it freely."""

    mode: str = "ok"  # ok | down | hang | garbage | refuse | refuse_bare | throttle | reset | huge
    script: list[str] = field(default_factory=list)  # modes for the next calls, then `mode`
    expires_in: Any = 3600
    retry_after: str | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)  # ends "hang"
    calls: list[Call] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on each call


class AuthServer(FakeIssuer):
    def __init__(self) -> None:
        super().__init__()
        self.endpoints: dict[str, TokenEndpoint] = {p: TokenEndpoint() for p in CLIENT_IDS}
        self.violations: list[str] = []
        self.seen_jti: set[str] = set()
        self.issued: list[str] = []
        self.subject_tokens: list[str] = []
        self._serial = itertools.count(1)
        self.app.router.add_post("/{provider}/token", self._token)

    def token_endpoint(self, provider: str) -> str:
        return f"{self.issuer(provider)}/token"

    def calls(self, provider: str) -> int:
        return len(self.endpoints[provider].calls)

    def environment(self, *providers: str, endpoint: bool = True) -> dict[str, str]:
        """The grant variables for `providers` (client id, private JWK, token endpoint)."""
        env: dict[str, str] = {}
        for p in providers:
            env[CLIENT_ID_VARIABLE[p]] = CLIENT_IDS[p]
            env[JWK_VARIABLE[p]] = private_jwk(p)
            if endpoint:
                env[ENDPOINT_VARIABLE[p]] = self.token_endpoint(p)
        return env

    # --- the endpoint -------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        provider = request.match_info["provider"]
        endpoint = self.endpoints[provider]
        mode = endpoint.script.pop(0) if endpoint.script else endpoint.mode
        form = await self._form(request)
        claims = None
        if form is not None:
            claims = self._check(provider, form)
        endpoint.calls.append(Call(provider, form or {}, claims, time.monotonic()))
        endpoint.arrived.set()
        if mode == "down":
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        if mode == "throttle":
            headers = {"Retry-After": endpoint.retry_after} if endpoint.retry_after is not None else {}
            return web.Response(status=429, text="slow down", headers=headers)
        if mode == "hang":
            await endpoint.release.wait()
        if mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if mode == "garbage":
            return web.Response(body=b"<html>welcome to the proxy</html>", content_type="text/html")
        if mode == "huge":
            return web.json_response({"access_token": "x" * (2 * 1024 * 1024), "expires_in": 60})
        if mode == "refuse":
            return web.json_response(
                {"error": "invalid_scope", "error_description": "The scope is not allowed for this client."},
                status=400,
            )
        if mode == "refuse_bare":
            return web.json_response({"error": "unauthorized_client"}, status=401)
        if form is None or claims is None:
            return web.json_response({"error": "invalid_client", "error_description": "rejected"}, status=400)
        token = f"{provider}-access-{next(self._serial)}-{'z' * 16}"
        self.issued.append(token)
        return web.json_response(
            {"access_token": token, "token_type": "Bearer", "expires_in": endpoint.expires_in}
        )

    async def _form(self, request: web.Request) -> dict[str, str] | None:
        if request.content_type != "application/x-www-form-urlencoded":
            self.violations.append(f"content type {request.content_type}")
            return None
        pairs = parse_qsl((await request.read()).decode(), keep_blank_values=True, strict_parsing=True)
        form = dict(pairs)
        if len(form) != len(pairs):
            self.violations.append("a repeated form field")
            return None
        return form

    def _violation(self, text: str) -> None:
        self.violations.append(text)

    def _check(self, provider: str, form: dict[str, str]) -> dict[str, Any] | None:
        """The grant's exact fields and its assertion; the assertion's claims when all hold."""
        client_id = CLIENT_IDS[provider]
        grant = form.get("grant_type")
        if provider == "maskinporten":
            expected = {"grant_type", "assertion"}
            if grant != JWT_BEARER:
                return self._fail(f"maskinporten grant_type {grant}")
            assertion = form.get("assertion", "")
        else:
            if provider == "tokenx":
                expected = {"grant_type", "subject_token_type", "subject_token", "audience"}
                if grant != TOKEN_EXCHANGE or form.get("subject_token_type") != SUBJECT_TYPE:
                    return self._fail(f"tokenx grant {grant}")
                self.subject_tokens.append(form.get("subject_token", ""))
            elif grant == "client_credentials":
                expected = {"grant_type", "scope"}
            elif grant == JWT_BEARER:
                expected = {"grant_type", "scope", "requested_token_use", "assertion"}
                if form.get("requested_token_use") != "on_behalf_of":
                    return self._fail("on-behalf-of without requested_token_use")
                self.subject_tokens.append(form.get("assertion", ""))
            else:
                return self._fail(f"azuread grant_type {grant}")
            expected |= {"client_id", "client_assertion_type", "client_assertion"}
            if form.get("client_id") != client_id or form.get("client_assertion_type") != ASSERTION_TYPE:
                return self._fail("client authentication fields")
            assertion = form.get("client_assertion", "")
        if set(form) != expected:
            return self._fail(f"{provider} fields {sorted(form)} instead of {sorted(expected)}")
        if any(not value for value in form.values()):
            return self._fail("an empty form field")
        claims = self._verify(provider, assertion)
        if claims is None:
            return None
        if claims.get("iss") != client_id:
            return self._fail("assertion iss is not the client id")
        if provider != "maskinporten" and claims.get("sub") != client_id:
            return self._fail("client assertion sub is not the client id")
        if provider == "maskinporten" and not claims.get("scope"):
            return self._fail("grant assertion without scope")
        return claims

    def _verify(self, provider: str, assertion: str) -> dict[str, Any] | None:
        public = app_key(provider).as_dict(private=False)
        key = type(app_key(provider)).import_key(public)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA", as the contract says
                token = jwt.decode(assertion, key, algorithms=[ALG[provider]])
        except (JoseError, ValueError) as e:
            return self._fail(f"assertion signature: {type(e).__name__}")
        if token.header.get("kid") != f"app-{provider}-kid":
            return self._fail("assertion kid")
        claims = dict(token.claims)
        now = time.time()
        if claims.get("aud") != self.issuer(provider):
            return self._fail("assertion aud is not the issuer")
        iat, exp, jti = claims.get("iat"), claims.get("exp"), claims.get("jti")
        if not isinstance(iat, int) or not isinstance(exp, int) or not isinstance(jti, str) or not jti:
            return self._fail("assertion iat/exp/jti")
        if exp - iat > 120 or exp <= now or iat > now + 5:
            return self._fail("assertion lifetime")
        if provider != "maskinporten" and claims.get("nbf") is None:
            return self._fail("client assertion without nbf")
        if jti in self.seen_jti:
            return self._fail("assertion jti replayed")
        self.seen_jti.add(jti)
        return claims

    def _fail(self, text: str) -> None:
        self.violations.append(text)
        return None


@pytest.fixture
async def issuer(aiohttp_server: Any) -> AsyncIterator[AuthServer]:
    """Replaces conftest's issuer (so make_texas and token use it): the same discovery and
    keys, plus the strict token endpoints. A module imports it to use it."""
    fake = AuthServer()
    server = await aiohttp_server(fake.app)
    fake.base_url = str(server.make_url("")).rstrip("/")
    for p in PROVIDERS:
        fake.publish(p, public_jwk(make_key("RS256", "key-1"), "key-1"))
    yield fake
    for endpoint in fake.endpoints.values():
        endpoint.release.set()

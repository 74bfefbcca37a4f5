"""Test parts: real keys, real signatures, a real local issuer over HTTP.

`FakeIssuer` is a small aiohttp app that plays one or more identity providers: a discovery
document and a JWKS per provider, which a test can change (rotate, remove, break, slow down)
while counting every fetch. `sign` makes compact JWS with joserfc, including ones no honest
issuer would make, for the attack tests.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import math
import random
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

PROVIDERS = ("idporten", "maskinporten", "azuread", "tokenx")
AUDIENCES: Mapping[str, str | None] = {
    "idporten": "dev-gcp:team:app",
    "maskinporten": None,
    "azuread": "9f5c0d5e-0000-4000-8000-00000000c11e",
    "tokenx": "dev-gcp:team:app",
}
AUDIENCE_VARIABLE = {
    "idporten": "IDPORTEN_AUDIENCE",
    "azuread": "AZURE_APP_CLIENT_ID",
    "tokenx": "TOKEN_X_CLIENT_ID",
}
PREFIX = {"idporten": "IDPORTEN", "maskinporten": "MASKINPORTEN", "azuread": "AZURE", "tokenx": "TOKEN_X"}


@functools.cache
def make_key(alg: str, kid: str) -> RSAKey | ECKey | OKPKey:
    """A private key for `alg`, the same object for the same (alg, kid) within a test run."""
    if alg.startswith(("RS", "PS")):
        key: RSAKey | ECKey | OKPKey = RSAKey.generate_key(2048)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256")
    elif alg == "ES384":
        key = ECKey.generate_key("P-384")
    elif alg == "ES512":
        key = ECKey.generate_key("P-521")
    elif alg == "EdDSA":
        key = OKPKey.generate_key("Ed25519")
    else:
        raise ValueError(alg)
    return key


def public_jwk(key: RSAKey | ECKey | OKPKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk = key.as_dict(private=False)
    jwk.update(kid=kid, use="sig", **extra)
    return jwk


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(
    claims: Mapping[str, Any] | bytes,
    key: RSAKey | ECKey | OKPKey,
    *,
    alg: str = "RS256",
    kid: str | None = "key-1",
    header: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS of `claims` (a mapping, or raw payload bytes taken as they are)."""
    protected: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        protected["kid"] = kid
    protected.update(header or {})
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # EdDSA: RFC 9864 prefers "Ed25519"
        return jws.serialize_compact(protected, payload, key, registry=registry)


def sign_raw(header: Mapping[str, Any] | bytes, payload: bytes, signer: Any) -> str:
    """A JWS from raw parts, with `signer(signing_input) -> signature bytes`."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    signing_input = f"{b64(h)}.{b64(payload)}".encode()
    return f"{signing_input.decode()}.{b64(signer(signing_input))}"


def claims_for(provider: str, issuer: str, now: float | None = None, **overrides: Any) -> dict[str, Any]:
    now = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": "x3rc5Y2QkqdmRKo0mF3yYoZ7Q3r3pQ7sXbQKqD5fd9A",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 3600,
        "jti": "5e6a1b9e-2b42-4c1b-9d3e-8c9a4f1e2d3c",
    }
    audience = AUDIENCES[provider]
    if audience is not None:
        claims["aud"] = audience
    if provider == "idporten":
        claims.update(pid="12345678901", acr="idporten-loa-high", amr=["BankID"], client_id="client")
    elif provider == "maskinporten":
        claims.update(
            scope="nav:test/api", consumer={"authority": "iso6523-actorid-upis", "ID": "0192:889640782"}
        )
    elif provider == "tokenx":
        claims.update(
            pid="12345678901", acr="idporten-loa-substantial", idp="idporten", client_id="cluster:team:app"
        )
    else:
        claims.update(azp="caller-client-id", oid="00000000-0000-0000-0000-0000000000aa", roles=["access"])
    for name, value in overrides.items():
        if value is ...:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


@dataclass
class ProviderState:
    """What the fake issuer serves for one provider; tests change it freely."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "ok"  # ok | down | garbage | empty | hang | reset | enc_only | not_modified
    hang_seconds: float = 30.0
    cache_control: str | None = None
    etag: bool = True
    content_type: str = "application/json"
    discovery: dict[str, Any] = field(default_factory=dict)  # members that override the document's
    jwks_fetches: int = 0
    jwks_304: int = 0
    discovery_fetches: int = 0


class FakeIssuer:
    """One local HTTP server acting as several providers under /<provider>/."""

    def __init__(self) -> None:
        self.state: dict[str, ProviderState] = {p: ProviderState() for p in PROVIDERS}
        self.base_url = ""
        self.app = web.Application()
        self.app.router.add_get("/{provider}/.well-known/openid-configuration", self._discovery)
        self.app.router.add_get("/{provider}/jwks", self._jwks)

    def issuer(self, provider: str) -> str:
        return f"{self.base_url}/{provider}"

    def jwks_uri(self, provider: str) -> str:
        return f"{self.base_url}/{provider}/jwks"

    def well_known(self, provider: str) -> str:
        return f"{self.base_url}/{provider}/.well-known/openid-configuration"

    def publish(self, provider: str, *jwks: dict[str, Any]) -> None:
        self.state[provider].keys = list(jwks)

    async def _discovery(self, request: web.Request) -> web.Response:
        name = request.match_info["provider"]
        self.state[name].discovery_fetches += 1
        return web.json_response(
            {
                "issuer": self.issuer(name),
                "jwks_uri": self.jwks_uri(name),
                "token_endpoint": f"{self.issuer(name)}/token",
                **self.state[name].discovery,
            }
        )

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        state = self.state[request.match_info["provider"]]
        state.jwks_fetches += 1
        if state.mode == "down":
            return web.Response(status=503, text="unavailable")
        if state.mode == "not_modified":  # whatever the request: a broken server or proxy
            return web.Response(status=304)
        if state.mode == "garbage":
            return web.Response(body=b"<html>not a key set", content_type="text/html")
        if state.mode == "hang":
            await asyncio.sleep(state.hang_seconds)
        if state.mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        keys = [] if state.mode == "empty" else state.keys
        if state.mode == "enc_only":
            keys = [{**k, "use": "enc"} for k in state.keys]
        body = json.dumps({"keys": keys}).encode()
        headers = {}
        if state.cache_control:
            headers["Cache-Control"] = state.cache_control
        if state.etag:
            tag = f'"{hash(body) & 0xFFFFFFFF:x}"'
            headers["ETag"] = tag
            if request.headers.get("If-None-Match") == tag:
                state.jwks_304 += 1
                return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers, content_type=state.content_type)


def environment(
    issuer: FakeIssuer, providers: tuple[str, ...] = PROVIDERS, *, discovery: bool = False, **extra: str
) -> dict[str, str]:
    """The NAIS variables that point texas at the fake issuer."""
    env: dict[str, str] = {}
    for p in providers:
        prefix = PREFIX[p]
        env[f"{prefix}_ENABLED"] = "true"
        if p in AUDIENCE_VARIABLE:
            env[AUDIENCE_VARIABLE[p]] = AUDIENCES[p]  # type: ignore[assignment]
        if discovery:
            env["AZURE_APP_WELL_KNOWN_URL" if p == "azuread" else f"{prefix}_WELL_KNOWN_URL"] = (
                issuer.well_known(p)
            )
        elif p == "azuread":
            env["AZURE_OPENID_CONFIG_ISSUER"] = issuer.issuer(p)
            env["AZURE_OPENID_CONFIG_JWKS_URI"] = issuer.jwks_uri(p)
        else:
            env[f"{prefix}_ISSUER"] = issuer.issuer(p)
            env[f"{prefix}_JWKS_URI"] = issuer.jwks_uri(p)
    env.update(extra)
    return env


def _probably_prime(n: int, rng: random.Random) -> bool:
    """Miller-Rabin with 32 random bases: enough for test keys."""
    if n < 4 or n % 2 == 0:
        return n in (2, 3)
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(32):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


@functools.cache
def roca_key() -> RSAKey:
    """A 2048-bit RSA key built the way Infineon's RSALib built them (CVE-2017-15361): each
    prime is k * M + (65537^a mod M), M the product of the primes up to 167."""
    rng = random.Random(15361)
    primes = [p for p in range(2, 168) if all(p % d for d in range(2, math.isqrt(p) + 1))]
    m = math.prod(primes)

    def prime() -> int:
        while True:
            candidate = rng.getrandbits(1025 - m.bit_length()) * m + pow(65537, rng.getrandbits(64), m)
            # the top two bits set, so that two such primes make a 2048-bit modulus
            if candidate >> 1022 == 3 and _probably_prime(candidate, rng):
                return candidate

    p, q = prime(), prime()
    assert (p * q).bit_length() == 2048
    e = 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(e, p * q)
    crt = (rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q))
    numbers = rsa.RSAPrivateNumbers(p, q, d, *crt, public)
    return RSAKey.import_key(numbers.private_key())

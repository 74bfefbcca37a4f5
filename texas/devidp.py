"""A development identity provider that stands in for all four NAIS providers.

`texas dev` runs it next to the service so that someone with no identity provider, container
or account can mint real signed tokens and see texas accept them. The service is pointed at it
through the same discovery URLs it uses in production (see `dev_environment`), so what is
exercised is the production code path, not a shortcut.

HTTP API (all JSON):

    GET  /{provider}/.well-known/openid-configuration
    GET  /{provider}/jwks                 public keys only, each with kid, alg and use
    POST /{provider}/token                {"claims": {...}, "level": "...", "expires_in": 3600}
                                          (all optional; a claim set to null is left out)
    POST /rotate                          new signing key; the previous ones stay published
    GET  /api/config                      providers, issuers, audiences (for the page)
    POST /api/introspect                  forwarded to the service, so the page needs no CORS
    GET  /                                the page; its files are under /static/

This is never started by `texas serve`: nothing here is safe for production.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import web
from joserfc import jwt
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

Algorithm = Literal["RS256", "ES256", "EdDSA"]

PROVIDERS: tuple[str, ...] = ("idporten", "maskinporten", "azuread", "tokenx")
ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA")
LEVELS: tuple[str, ...] = ("idporten-loa-substantial", "idporten-loa-high")

# A synthetic fødselsnummer (Skatteetaten/Tenor "syntetisk": month + 80) that passes both
# mod-11 checks, so apps that validate pid accept it, yet it can never be a real person.
DEFAULT_PID = "15839040188"
# A synthetic organisation number (mod-11 valid, from the 31x test range).
DEFAULT_ORGNO = "310123455"
DEFAULT_EXPIRES_IN = 3600
# Expired tokens are allowed on purpose (to test rejection), within a sane range.
MAX_ABS_EXPIRES_IN = 10 * 365 * 24 * 3600
# Published keys besides the current one; older ones are dropped on rotation.
MAX_OLD_KEYS = 2
STATE_FILE = "devidp-keys.json"
_KEY_TYPES = ("RSA", "EC", "OKP")

AUDIENCES: Mapping[str, str] = {
    "idporten": "4518f3da-d4a0-4bcd-8274-8007996d5bf6",  # the app's ID-porten client_id
    "maskinporten": "https://texas.example/api",  # not checked by texas
    "azuread": "fd4cff62-d461-412b-bb72-7292a3c4cb61",  # the app's Entra ID client id
    "tokenx": "local:texas:app",  # cluster:namespace:app
}
_AZURE_CALLER = "cdb83bab-1233-437e-a832-5b1cb12393d8"
_AZURE_TENANT = "acfbc716-b79c-4fbd-939e-99a79206b01b"
_AZURE_OID = "f2904ab8-650b-48ef-b49b-554841cc8e11"
_AZURE_GROUP = "cebab19d-0a01-45d1-8b57-0003bf2dec4b"
_MASKINPORTEN_CLIENT = "2f6b4c1e-8a43-4d5e-9c0b-7e1d3a5f9b20"

_STATIC_DIR = Path(__file__).parent / "static"


class DevIdpError(ValueError):
    """A token request the dev IdP cannot honour; the message is shown to the caller."""


@dataclass(frozen=True)
class MintedToken:
    """One signed token with what went into it, as the token endpoint answers."""

    access_token: str
    expires_in: int
    header: dict[str, Any]
    claims: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
            "header": self.header,
            "claims": self.claims,
        }


def generate_key(alg: str) -> Key:
    """A fresh private signing key for `alg`, with kid (its RFC 7638 thumbprint), alg, use."""
    key: Key
    if alg == "RS256":
        key = RSAKey.generate_key(2048, auto_kid=False)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256", auto_kid=False)
    elif alg == "EdDSA":
        key = OKPKey.generate_key("Ed25519", auto_kid=False)
    else:
        raise DevIdpError(f"Unsupported algorithm {alg!r}; choose one of {', '.join(ALGORITHMS)}.")
    return import_key(key.as_dict(private=True) | {"kid": key.thumbprint(), "alg": alg, "use": "sig"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pairwise_sub(provider: str, seed: str) -> str:
    """A stable opaque `sub` per provider and person, like ID-porten's pairwise subjects."""
    return _b64(hashlib.sha256(f"texas-dev:{provider}:{seed}".encode()).digest())


class DevIdentityProvider:
    """Keys, discovery documents and token minting for the four dev providers.

    One key set serves all four providers; the issuer (`base_url/{provider}`) keeps their
    tokens apart. Keys live in memory, or in `state_dir` so tokens survive a restart.
    """

    def __init__(
        self,
        base_url: str,
        alg: str = "RS256",
        state_dir: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if alg not in ALGORITHMS:
            raise DevIdpError(f"Unsupported algorithm {alg!r}; choose one of {', '.join(ALGORITHMS)}.")
        self.base_url = base_url.rstrip("/")
        self.alg = alg
        self.state_dir = state_dir
        self._clock = clock
        # Current signing key first, then older ones still published.
        self._keys: list[Key] = self._load() if state_dir is not None else []
        if not self._keys or self._keys[0].alg != alg:
            # A new state dir, or a different --alg: start a key, keep the old ones published.
            self.rotate()

    # keys

    @property
    def current_kid(self) -> str:
        return str(self._keys[0].kid)

    @property
    def kids(self) -> list[str]:
        return [str(k.kid) for k in self._keys]

    def rotate(self) -> str:
        """Sign with a new key from now on; tokens signed before still verify until expiry."""
        self._keys = [generate_key(self.alg), *self._keys[:MAX_OLD_KEYS]]
        self._save()
        return self.current_kid

    def jwks(self) -> dict[str, Any]:
        """The public JWKS: never a private member (as_dict(private=False) drops them)."""
        return {"keys": [k.as_dict(private=False) for k in self._keys]}

    def _state_path(self) -> Path | None:
        return self.state_dir / STATE_FILE if self.state_dir is not None else None

    def _load(self) -> list[Key]:
        path = self._state_path()
        if path is None or not path.exists():
            return []
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = data["keys"]
            if any(not isinstance(d, dict) or d.get("kty") not in _KEY_TYPES for d in entries):
                raise ValueError("only RSA, EC and OKP keys")
            keys = [import_key(d) for d in entries]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DevIdpError(
                f"Cannot read the dev keys in {path} ({type(e).__name__}); "
                "remove the file to start with new keys."
            ) from None
        if not keys or any(not k.is_private or not k.kid or not k.alg for k in keys):
            raise DevIdpError(f"{path} must hold private keys with kid and alg.")
        return keys

    def _save(self) -> None:
        path = self._state_path()
        if path is None:
            return
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = json.dumps({"keys": [k.as_dict(private=True) for k in self._keys]}, indent=2)
        tmp = path.with_name(path.name + ".tmp")
        # Private keys: created 0600 from the start, then moved into place atomically.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    # documents

    def issuer(self, provider: str) -> str:
        return f"{self.base_url}/{provider}"

    def discovery(self, provider: str) -> dict[str, Any]:
        issuer = self.issuer(provider)
        return {
            "issuer": issuer,
            "jwks_uri": f"{issuer}/jwks",
            "token_endpoint": f"{issuer}/token",
            "response_types_supported": ["token"],
            "subject_types_supported": ["pairwise" if provider == "idporten" else "public"],
            "id_token_signing_alg_values_supported": sorted({str(k.alg) for k in self._keys}),
            "grant_types_supported": ["urn:texas:dev:mint"],
            "token_endpoint_auth_methods_supported": ["none"],
        }

    # tokens

    def default_claims(self, provider: str, now: int, expires_in: int) -> dict[str, Any]:
        """Realistic claims for `provider`, shaped like the real provider's access tokens."""
        base: dict[str, Any] = {
            "iss": self.issuer(provider),
            "aud": AUDIENCES[provider],
            "iat": now,
            "exp": now + expires_in,
            "jti": str(uuid.uuid4()),
        }
        if provider == "idporten":
            return base | {
                "pid": DEFAULT_PID,
                "acr": "idporten-loa-high",
                "amr": ["BankID"],
                "client_id": AUDIENCES["idporten"],
                "client_amr": "private_key_jwt",
                "scope": "openid profile",
                "locale": "nb",
            }
        if provider == "maskinporten":
            return base | {
                "scope": "nav:texas/dev.read",
                "consumer": {"authority": "iso6523-actorid-upis", "ID": f"0192:{DEFAULT_ORGNO}"},
                "client_id": _MASKINPORTEN_CLIENT,
                "client_amr": "private_key_jwt",
                "token_type": "Bearer",
            }
        if provider == "azuread":
            return base | {
                "nbf": now,
                "azp": _AZURE_CALLER,
                "azp_name": "local:texas:caller",
                "oid": _AZURE_OID,
                "sub": _pairwise_sub(provider, _AZURE_OID),
                "tid": _AZURE_TENANT,
                "NAVident": "Z990123",
                "name": "Dev Utvikler",
                "preferred_username": "dev.utvikler@nav.example",
                "groups": [_AZURE_GROUP],
                "roles": ["access_as_application"],
                "scp": "defaultaccess",
                "ver": "2.0",
            }
        if provider == "tokenx":
            return base | {
                "nbf": now,
                "client_id": "local:texas:caller",
                "idp": self.issuer("idporten"),
                "pid": DEFAULT_PID,
                "acr": "idporten-loa-high",
                "amr": ["BankID"],
            }
        raise DevIdpError(f"Unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}.")

    def mint(
        self,
        provider: str,
        claims: Mapping[str, Any] | None = None,
        level: str | None = None,
        expires_in: int | None = None,
    ) -> MintedToken:
        """Sign a token: defaults, then `level` as `acr`, then `claims` (null removes one)."""
        if provider not in PROVIDERS:
            raise DevIdpError(f"Unknown provider {provider!r}; choose one of {', '.join(PROVIDERS)}.")
        if expires_in is None:
            expires_in = DEFAULT_EXPIRES_IN
        if isinstance(expires_in, bool) or not isinstance(expires_in, int):
            raise DevIdpError("expires_in must be a whole number of seconds.")
        if abs(expires_in) > MAX_ABS_EXPIRES_IN:
            raise DevIdpError(f"expires_in must be within ±{MAX_ABS_EXPIRES_IN} seconds.")
        if level is not None and not isinstance(level, str):
            raise DevIdpError("level must be a string such as idporten-loa-substantial.")
        now = int(self._clock())
        body = self.default_claims(provider, now, expires_in)
        if level:
            body["acr"] = level
        for name, value in (claims or {}).items():
            if value is None:
                body.pop(name, None)
            else:
                body[name] = value
        if provider == "idporten" and "sub" not in body and "pid" in body:
            body["sub"] = _pairwise_sub(provider, str(body["pid"]))
        if provider == "tokenx" and "sub" not in body:
            body["sub"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"texas-dev:{body.get('pid')}"))
        key = self._keys[0]
        header = {"typ": "JWT", "alg": str(key.alg), "kid": str(key.kid)}
        with warnings.catch_warnings():
            # joserfc flags EdDSA as deprecated by RFC 9864; it is still what NAIS verifies.
            warnings.simplefilter("ignore")
            token = jwt.encode(header, body, key, algorithms=[str(key.alg)])
        return MintedToken(token, expires_in, header, body)


def dev_environment(base_url: str) -> dict[str, str]:
    """The NAIS variables that point texas at the dev providers through their discovery URLs."""
    base = base_url.rstrip("/")

    def well_known(provider: str) -> str:
        return f"{base}/{provider}/.well-known/openid-configuration"

    return {
        "IDPORTEN_ENABLED": "true",
        "IDPORTEN_WELL_KNOWN_URL": well_known("idporten"),
        "IDPORTEN_AUDIENCE": AUDIENCES["idporten"],
        "MASKINPORTEN_ENABLED": "true",
        "MASKINPORTEN_WELL_KNOWN_URL": well_known("maskinporten"),
        "AZURE_ENABLED": "true",
        "AZURE_APP_WELL_KNOWN_URL": well_known("azuread"),
        "AZURE_APP_CLIENT_ID": AUDIENCES["azuread"],
        "TOKEN_X_ENABLED": "true",
        "TOKEN_X_WELL_KNOWN_URL": well_known("tokenx"),
        "TOKEN_X_CLIENT_ID": AUDIENCES["tokenx"],
    }


# HTTP

IDP_KEY = web.AppKey("devidp", DevIdentityProvider)
INTROSPECT_URL_KEY = web.AppKey("devidp_introspect_url", str)
SESSION_KEY = web.AppKey("devidp_session", aiohttp.ClientSession)


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
    try:
        data = await _read_json_object(request)
        claims = data.get("claims") or {}
        if not isinstance(claims, dict):
            raise DevIdpError("claims must be a JSON object.")
        minted = request.app[IDP_KEY].mint(provider, claims, data.get("level"), data.get("expires_in"))
    except DevIdpError as e:
        return _error(400, str(e))
    return web.json_response(minted.as_dict(), headers={"Cache-Control": "no-store"})


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
            "introspect_url": request.app.get(INTROSPECT_URL_KEY),
        }
    )


async def _introspect(request: web.Request) -> web.Response:
    url = request.app.get(INTROSPECT_URL_KEY)
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
        _STATIC_DIR / "index.html",
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


def create_devidp_app(idp: DevIdentityProvider, introspect_url: str | None = None) -> web.Application:
    """The dev IdP as an aiohttp app; `introspect_url` is the service's introspection URL."""
    app = web.Application()
    app[IDP_KEY] = idp
    if introspect_url:
        app[INTROSPECT_URL_KEY] = introspect_url
    app.cleanup_ctx.append(_client_session)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", _STATIC_DIR)
    app.router.add_get("/api/config", _config)
    app.router.add_post("/api/introspect", _introspect)
    app.router.add_post("/rotate", _rotate)
    app.router.add_get("/{provider}/.well-known/openid-configuration", _discovery)
    app.router.add_get("/{provider}/jwks", _jwks)
    app.router.add_post("/{provider}/token", _token)
    return app

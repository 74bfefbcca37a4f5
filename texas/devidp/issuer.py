"""A development identity provider that stands in for all four NAIS providers.

`texas dev` runs it next to the service so that someone with no identity provider, container
or account can mint real signed tokens and see texas accept them. The service is pointed at it
through the same discovery URLs it uses in production (see `dev_environment`), so what is
exercised is the production code path, not a shortcut.

It also answers the OAuth grants the service makes for apps (Maskinporten JWT-bearer,
Entra ID client credentials and on-behalf-of, TokenX token exchange), checking the client
assertions against the dev app's keys (clients.py); the grants themselves are in grants.py.
Its HTTP face is http.py.

This is never started by `texas serve`: nothing here is safe for production.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet, import_key

from texas.devidp.clients import (
    AZURE_CLIENT_ID,
    MASKINPORTEN_CLIENT_ID,
    TOKEN_X_CLIENT_ID,
    DevClient,
    client_environment,
    generate_clients,
)

# ALGORITHMS and DevIdpError stay importable from here, where they were first.
from texas.devidp.keys import ALGORITHMS as ALGORITHMS
from texas.devidp.keys import DevIdpError as DevIdpError
from texas.devidp.keys import generate_key
from texas.introspection.keys import ALGORITHMS as VERIFIABLE_ALGORITHMS

PROVIDERS: tuple[str, ...] = ("idporten", "maskinporten", "azuread", "tokenx")
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
# A token handed back to the dev IdP (a subject token) is never read beyond this size.
MAX_TOKEN_BYTES = 64 * 1024
STATE_FILE = "devidp-keys.json"
_KEY_TYPES = ("RSA", "EC", "OKP")

AUDIENCES: Mapping[str, str] = {
    "idporten": "4518f3da-d4a0-4bcd-8274-8007996d5bf6",  # the app's ID-porten client_id
    "maskinporten": "https://texas.example/api",  # not checked by texas
    "azuread": AZURE_CLIENT_ID,  # the app's Entra ID client id
    "tokenx": TOKEN_X_CLIENT_ID,  # cluster:namespace:app
}
_CALLER = "local:texas:caller"  # the app that called this one, in minted tokens
_AZURE_CALLER = "cdb83bab-1233-437e-a832-5b1cb12393d8"
_AZURE_TENANT = "acfbc716-b79c-4fbd-939e-99a79206b01b"
_AZURE_OID = "f2904ab8-650b-48ef-b49b-554841cc8e11"
_AZURE_GROUP = "cebab19d-0a01-45d1-8b57-0003bf2dec4b"
GRANT_TYPES: Mapping[str, tuple[str, ...]] = {
    "idporten": (),
    "maskinporten": ("urn:ietf:params:oauth:grant-type:jwt-bearer",),
    "azuread": ("client_credentials", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
    "tokenx": ("urn:ietf:params:oauth:grant-type:token-exchange",),
}


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


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _pairwise_sub(provider: str, seed: str) -> str:
    """A stable opaque `sub` per provider and person, like ID-porten's pairwise subjects."""
    return _b64(hashlib.sha256(f"texas-dev:{provider}:{seed}".encode()).digest())


class DevIdentityProvider:
    """Keys, discovery documents and token minting for the four dev providers.

    One key set serves all four providers; the issuer (`base_url/{provider}`) keeps their
    tokens apart. Keys live in memory, or in `state_dir` so tokens survive a restart. The dev
    app's client keys (`clients`) are made on first use, fresh on every start.
    """

    def __init__(
        self,
        base_url: str,
        alg: str = "RS256",
        state_dir: Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        clients: Mapping[str, DevClient] | None = None,
    ) -> None:
        if alg not in ALGORITHMS:
            raise DevIdpError(f"Unsupported algorithm {alg!r}; choose one of {', '.join(ALGORITHMS)}.")
        self.base_url = base_url.rstrip("/")
        self.alg = alg
        self.state_dir = state_dir
        self._clock = clock
        self._clients = dict(clients) if clients is not None else None
        # Current signing key first, then older ones still published.
        self._keys: list[Key] = self._load() if state_dir is not None else []
        if not self._keys or self._keys[0].alg != alg:
            # A new state dir, or a different --alg: start a key, keep the old ones published.
            self.rotate()

    # keys

    @property
    def clients(self) -> Mapping[str, DevClient]:
        """The dev app's registration at each provider that does grants: given, or made on
        first use (RSA keys take a while to make, and most uses of the IdP need none)."""
        if self._clients is None:
            self._clients = generate_clients(self.alg)
        return self._clients

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
            "grant_types_supported": list(GRANT_TYPES[provider]),
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            # what the service can verify; each client key allows only its own
            "token_endpoint_auth_signing_alg_values_supported": sorted(VERIFIABLE_ALGORITHMS),
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
                "client_id": MASKINPORTEN_CLIENT_ID,
                "client_amr": "private_key_jwt",
                "token_type": "Bearer",
            }
        if provider == "azuread":
            return base | {
                "nbf": now,
                "azp": _AZURE_CALLER,
                "azp_name": _CALLER,
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
                "client_id": _CALLER,
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
        token, header = self.sign(body)
        return MintedToken(token, expires_in, header, body)

    def sign(self, claims: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        """A compact JWT of `claims` signed with the current key, and its header."""
        key = self._keys[0]
        header = {"typ": "JWT", "alg": str(key.alg), "kid": str(key.kid)}
        with warnings.catch_warnings():
            # joserfc flags EdDSA as deprecated by RFC 9864; it is still what NAIS verifies.
            warnings.simplefilter("ignore")
            token = jwt.encode(header, dict(claims), key, algorithms=[str(key.alg)])
        return token, header

    def verify_issued(self, token: str) -> dict[str, Any]:
        """The claims of a token this IdP signed, with a key it still publishes, not expired.

        Used on subject tokens of a token exchange and user tokens of on-behalf-of: a real
        provider exchanges only tokens it can verify. DevIdpError says why not, in a sentence.
        """
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise DevIdpError("The token is not a compact JWT.")
        try:
            header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
        except ValueError:
            raise DevIdpError("The token is not a compact JWT.") from None
        if not isinstance(header, dict) or header.get("kid") not in self.kids:
            raise DevIdpError("The token was not signed by a key this identity provider publishes.")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # EdDSA, as in sign()
                claims = jwt.decode(token, KeySet(self._keys), algorithms=list(ALGORITHMS)).claims
        except (JoseError, ValueError, TypeError):
            raise DevIdpError("The token's signature does not verify.") from None
        if claims.get("iss") not in {self.issuer(p) for p in PROVIDERS}:
            raise DevIdpError("The token was not issued by this identity provider.")
        exp = claims.get("exp")
        if isinstance(exp, bool) or not isinstance(exp, (int, float)) or not math.isfinite(exp):
            raise DevIdpError("The token has no valid exp.")
        if exp <= self._clock():
            raise DevIdpError("The token has expired.")
        return dict(claims)


def dev_environment(base_url: str, clients: Mapping[str, DevClient] | None = None) -> dict[str, str]:
    """The NAIS variables that point texas at the dev providers through their discovery URLs.

    With `clients` (the IdP's `clients`), also the client ids and private JWKs the token
    endpoints need; the token endpoints themselves come from discovery, as in production.
    """
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
        **(client_environment(clients) if clients is not None else {}),
    }

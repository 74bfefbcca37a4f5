"""A client of the dev identity provider's token endpoints, built as the contract says the
service builds its requests: joserfc assertions signed with the private JWK, one form per grant.

Used by the grant tests and by the stand-in service of the page test.
"""

from __future__ import annotations

import time
import uuid
import warnings
from collections.abc import Collection, Mapping
from typing import Any

from joserfc import jwt
from joserfc.jwk import Key

from texas.devidp.grants import CLIENT_ASSERTION_TYPE, JWT_BEARER, JWT_TOKEN_TYPE, TOKEN_EXCHANGE


def encode(header: Mapping[str, Any], claims: Mapping[str, Any], key: Key, alg: str | None = None) -> str:
    alg = alg or str(key.alg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc flags EdDSA as deprecated (RFC 9864)
        return jwt.encode(dict(header), dict(claims), key, algorithms=[alg])


def assertion(
    key: Key, client_id: str, audience: str, *, sub: bool, omit: Collection[str] = (), **claims: Any
) -> str:
    """iss (and sub) the client id, aud, iat, nbf, exp 60 s on, a fresh jti; then `claims`,
    less the claims named in `omit`."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": client_id, "aud": audience, "iat": now, "nbf": now, "exp": now + 60}
    body["jti"] = str(uuid.uuid4())
    if sub:
        body["sub"] = client_id
    body |= claims
    body = {k: v for k, v in body.items() if k not in omit}
    return encode({"typ": "JWT", "alg": key.alg, "kid": key.kid}, body, key)


def client_auth(key: Key, client_id: str, issuer: str, **claims: Any) -> dict[str, str]:
    """private_key_jwt (RFC 7523 §2.2)."""
    return {
        "client_id": client_id,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": assertion(key, client_id, issuer, sub=True, **claims),
    }


def token_form(
    provider: str,
    key: Key,
    client_id: str,
    issuer: str,
    target: str,
    user_token: str | None = None,
    resource: str | None = None,
) -> dict[str, str]:
    """The form for a machine token (no user_token) or an exchange, per the contract."""
    if provider == "maskinporten":
        extra = {"resource": resource} if resource else {}
        grant = assertion(key, client_id, issuer, sub=False, scope=target, **extra)
        return {"grant_type": JWT_BEARER, "assertion": grant}
    auth = client_auth(key, client_id, issuer)
    if provider == "azuread" and user_token is None:
        return {"grant_type": "client_credentials", "scope": target, **auth}
    if provider == "azuread":
        obo = {"requested_token_use": "on_behalf_of", "assertion": user_token, "scope": target}
        return {"grant_type": JWT_BEARER, **obo, **auth}
    return {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token_type": JWT_TOKEN_TYPE,
        "subject_token": user_token or "",
        "audience": target,
        **auth,
    }

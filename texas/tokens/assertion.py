"""The app's private key and the JWTs signed with it (RFC 7523).

Two kinds of assertion, both short-lived with a fresh `jti` so that a captured one is useless
within a couple of minutes and cannot be replayed at all:

- a client assertion (`private_key_jwt` client authentication, RFC 7523 section 2.2):
  `iss` = `sub` = the client id, `aud` = the provider's issuer;
- a JWT-bearer grant assertion (Maskinporten, RFC 7523 section 2.1): `iss` = the client id,
  `aud` = the issuer, `scope` = the target, and `resource` / `authorization_details` when asked.
"""

from __future__ import annotations

import base64
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from texas.errors import ConfigError

# The contract allows at most 120 s; 60 s leaves room for clock skew either way.
LIFETIME_SECONDS = 60
_RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}

PrivateKey = RSAKey | ECKey | OKPKey


@dataclass(frozen=True, repr=False)
class SigningKey:
    """A private JWK ready to sign with. Its repr shows the kid and algorithm only."""

    key: PrivateKey = field(compare=False)
    kid: str
    alg: str

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, alg={self.alg!r})"

    __str__ = __repr__


def parse_private_jwk(variable: str, raw: str) -> SigningKey:
    """The signing key in `raw`, or ConfigError naming `variable`. The sentence never quotes
    the value: it is a private key."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ConfigError(f"{variable} is not valid JSON: it must be a private JWK") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{variable} must be a private JWK (a JSON object)")
    kid = data.get("kid")
    if not isinstance(kid, str) or not kid:
        raise ConfigError(f"{variable} has no kid: the private JWK must name its key id")
    kty = data.get("kty")
    if kty not in ("RSA", "EC", "OKP"):
        raise ConfigError(f"{variable} must be an RSA, EC or Ed25519 (OKP) key, not kty {kty!r}")
    if kty == "RSA":
        bits = _rsa_bits(data.get("n"))
        if bits is not None and bits < 2048:  # before importing: joserfc warns on small keys
            raise ConfigError(f"{variable} is an RSA key of {bits} bits; at least 2048 are needed")
    try:
        key = import_key(data)
    except (JoseError, ValueError, TypeError, KeyError):
        raise ConfigError(f"{variable} does not parse as a {kty} private JWK") from None
    if not isinstance(key, RSAKey | ECKey | OKPKey) or not key.is_private:
        raise ConfigError(f"{variable} holds a public key only: the private JWK is needed to sign")
    alg = _algorithm(variable, key, data.get("alg"))
    return SigningKey(key=key, kid=kid, alg=alg)


def _rsa_bits(modulus: object) -> int | None:
    if not isinstance(modulus, str):
        return None
    try:
        raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    except ValueError:
        return None
    return int.from_bytes(raw, "big").bit_length()


def _algorithm(variable: str, key: PrivateKey, alg: object) -> str:
    """The JWK's `alg` if it fits the key, else the default for the key type."""
    if isinstance(key, RSAKey):
        if key.raw_value.key_size < 2048:
            raise ConfigError(
                f"{variable} is an RSA key of {key.raw_value.key_size} bits; at least 2048 needed"
            )
        allowed: tuple[str, ...] = _RSA_ALGS
        default = "RS256"
    elif isinstance(key, ECKey):
        curve = key.curve_name
        if curve not in _EC_ALGS:
            raise ConfigError(f"{variable} is an EC key on {curve}; P-256, P-384 or P-521 needed")
        allowed = (_EC_ALGS[curve],)
        default = _EC_ALGS[curve]
    else:
        if key.curve_name != "Ed25519":
            raise ConfigError(f"{variable} is an OKP key on {key.curve_name}; Ed25519 needed")
        allowed = ("EdDSA", "Ed25519")
        default = "EdDSA"
    if alg is None:
        return default
    if alg not in allowed:
        raise ConfigError(
            f"{variable} has alg {alg!r}, which its key cannot sign with ({', '.join(allowed)})"
        )
    return str(alg)


def sign(key: SigningKey, claims: Mapping[str, Any]) -> str:
    header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
    with warnings.catch_warnings():
        # joserfc warns that RFC 9864 deprecates "EdDSA"; the contract names it, so it stays.
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(header, dict(claims), key.key, algorithms=[key.alg])


def client_assertion(key: SigningKey, client_id: str, audience: str, now: float) -> str:
    """`private_key_jwt` client authentication."""
    issued = int(now)
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + LIFETIME_SECONDS,
        "jti": str(uuid.uuid4()),
    }
    return sign(key, claims)


def jwt_bearer_assertion(
    key: SigningKey,
    client_id: str,
    audience: str,
    scope: str,
    now: float,
    *,
    resource: str | None = None,
    authorization_details: list[Any] | None = None,
) -> str:
    """Maskinporten's grant: the assertion is the whole request for a token."""
    issued = int(now)
    claims: dict[str, Any] = {
        "iss": client_id,
        "aud": audience,
        "scope": scope,
        "iat": issued,
        "exp": issued + LIFETIME_SECONDS,
        "jti": str(uuid.uuid4()),
    }
    if resource is not None:
        claims["resource"] = resource
    if authorization_details is not None:
        claims["authorization_details"] = authorization_details
    return sign(key, claims)

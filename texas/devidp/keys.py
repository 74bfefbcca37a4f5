"""Key generation for the dev identity provider: its signing keys and the dev app's client keys."""

from __future__ import annotations

from joserfc.jwk import ECKey, Key, OKPKey, RSAKey, import_key

ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "EdDSA")


class DevIdpError(ValueError):
    """A request the dev IdP cannot honour; the message is shown to the caller."""


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

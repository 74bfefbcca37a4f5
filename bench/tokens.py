"""Benchmark tokens: RS256 access tokens shaped like ID-porten's, minted with joserfc.

The "new" workload needs one token per request (no reuse within a run), so a run of a few
seconds needs tens of thousands of them. One RSA-2048 signature costs ~0.3 ms, so minting is
spread over every core with a process pool; the tokens stay ordinary compact JWS.

Also usable on its own, to look at a token or feed another tool:

    python bench/tokens.py --count 3 --key key.pem     # prints tokens, one per line
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

ISSUER = "https://test.idporten.no"
AUDIENCE = "dev-gcp:bench:app"
KID = "bench-rsa-2048"
LIFETIME_SECONDS = 3600
HEADER = {"alg": "RS256", "kid": KID, "typ": "at+jwt"}


@dataclass(frozen=True)
class TokenSpec:
    """What every token of one benchmark shares: signer, issuer, audience."""

    key_pem: bytes
    kid: str = KID
    issuer: str = ISSUER
    audience: str = AUDIENCE


def new_key_pem() -> bytes:
    """A fresh RSA-2048 private key as PEM (one per benchmark; never reused across runs)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_jwks(key_pem: bytes, kid: str = KID) -> dict[str, Any]:
    """The JWKS document a provider would publish for this key."""
    public = RSAKey.import_key(key_pem).as_dict(private=False)
    public.update({"kid": kid, "use": "sig", "alg": "RS256"})
    return {"keys": [public]}


def claims_for(index: int, nonce: int, now: int, spec: TokenSpec) -> dict[str, Any]:
    """Claims of token number `index`, as ID-porten issues them for a citizen (synthetic)."""
    # jti from a per-pool nonce plus index: unique within the pool by construction.
    jti = str(uuid.UUID(int=(nonce + index) % (1 << 128)))
    person = 10_000_000_000 + (index * 7_919) % 89_999_999_999
    return {
        "iss": spec.issuer,
        "aud": spec.audience,
        "sub": f"bench-{uuid.UUID(int=(nonce ^ person) % (1 << 128)).hex}",
        "client_id": spec.audience,
        "scope": "openid profile",
        "pid": f"{person:011d}",
        "acr": "idporten-loa-high",
        "amr": ["BankID"],
        "iat": now,
        "nbf": now,
        "exp": now + LIFETIME_SECONDS,
        "jti": jti,
        "sid": str(uuid.UUID(int=(nonce * 31 + index) % (1 << 128))),
        "locale": "nb",
    }


def sample_claims(spec: TokenSpec | None = None) -> dict[str, Any]:
    """A representative claim set (for answers of the same size as a real verdict)."""
    return claims_for(0, 0, int(time.time()), spec or TokenSpec(key_pem=b""))


def _mint_range(spec: TokenSpec, nonce: int, now: int, start: int, count: int) -> list[str]:
    """Mint tokens start..start+count-1 (runs in a pool worker)."""
    key = RSAKey.import_key(spec.key_pem)
    header = {**HEADER, "kid": spec.kid}
    return [
        jwt.encode(header, claims_for(i, nonce, now, spec), key, algorithms=["RS256"])
        for i in range(start, start + count)
    ]


def mint(spec: TokenSpec, count: int, *, workers: int | None = None) -> list[str]:
    """`count` distinct tokens (distinct `jti`, so distinct bytes), minted on every core."""
    nonce = uuid.uuid4().int
    now = int(time.time())
    workers = max(1, min(workers or os.cpu_count() or 1, count // 500 or 1))
    if workers == 1:
        return _mint_range(spec, nonce, now, 0, count)
    chunk = -(-count // (workers * 4))
    starts = range(0, count, chunk)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        parts = pool.map(
            _mint_range,
            [spec] * len(starts),
            [nonce] * len(starts),
            [now] * len(starts),
            starts,
            [min(chunk, count - s) for s in starts],
        )
        return [token for part in parts for token in part]


def check_valid(tokens: Iterable[str], spec: TokenSpec) -> None:
    """Raise unless each token verifies with the published JWKS (a self-check of the minter)."""
    keys = KeySet.import_key_set(public_jwks(spec.key_pem, spec.kid))  # type: ignore[arg-type]
    for token in tokens:
        decoded = jwt.decode(token, keys, algorithms=["RS256"])
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": spec.issuer},
            aud={"essential": True, "value": spec.audience},
            exp={"essential": True},
        ).validate(decoded.claims)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--key", type=Path, help="PEM private key (created if missing)")
    args = parser.parse_args(argv)
    if args.key is None:
        pem = new_key_pem()
    elif args.key.exists():
        pem = args.key.read_bytes()
    else:
        pem = new_key_pem()
        args.key.write_bytes(pem)
    for token in mint(TokenSpec(key_pem=pem), args.count):
        sys.stdout.write(token + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

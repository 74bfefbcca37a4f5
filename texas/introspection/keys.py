"""Signing keys: one JWKS document in, an immutable snapshot of usable public keys out.

Pure: no I/O. Each key is judged on its own (as panva/jose's local key set does): a key that
cannot serve for signature checks (a member of the wrong JSON type, `use: enc`, a private
member, an unknown `kty`, RSA under 2048 bits or with the ROCA fingerprint, an `alg` that does
not fit the key) is skipped with a log line, and only a set with no usable key at all is an
error.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

from texas.errors import JwksError
from texas.introspection.roca import has_roca_fingerprint

log = logging.getLogger(__name__)

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
# The whole allow-list. Never `none`, never HMAC: a JWKS is public, so an HMAC "secret" from it
# would let anyone sign.
ALGORITHMS: frozenset[str] = frozenset({*RSA_ALGORITHMS, *EC_ALGORITHMS.values(), "EdDSA"})

MIN_RSA_BITS = 2048
MAX_KEYS = 100
MAX_KID_LENGTH = 256
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_STRING_MEMBERS = ("kid", "kty", "use", "alg", "crv", "n", "e", "x", "y")


@dataclass(frozen=True, eq=False, slots=True)
class PreparedKey:
    """A public key ready to verify with; identity (`is`) says "the same key" to caches."""

    kid: str
    kty: str
    algorithms: Mapping[str, Any]  # alg name -> joserfc JWSAlgModel
    key: RSAKey | ECKey | OKPKey
    fingerprint: bytes  # the public members, canonical; equal keys across fetches share it

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        return bool(self.algorithms[alg].verify(signing_input, signature, self.key))


class KeySnapshot:
    """The usable keys of one JWKS at one moment, by `kid`."""

    __slots__ = ("_all", "_by_kid")

    def __init__(self, keys: Iterable[PreparedKey] = ()) -> None:
        by_kid: dict[str, tuple[PreparedKey, ...]] = {}
        for key in keys:
            by_kid[key.kid] = (*by_kid.get(key.kid, ()), key)
        self._by_kid = by_kid
        self._all = frozenset(k for v in by_kid.values() for k in v)  # PreparedKey hashes by identity

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[PreparedKey]:
        return iter(self._all)

    def has_kid(self, kid: str) -> bool:
        return kid in self._by_kid

    def candidates(self, kid: str) -> tuple[PreparedKey, ...]:
        return self._by_kid.get(kid, ())

    def holds(self, key: PreparedKey) -> bool:
        """True while exactly this key object is in the set (cache entries check this)."""
        return key in self._all


def parse_jwks(document: bytes, previous: KeySnapshot | None = None, *, source: str = "") -> KeySnapshot:
    """Read a JWKS document; keys equal to ones in `previous` keep their identity.

    Raises JwksError when the document is not a JWKS or holds no usable signing key: such a
    fetch must not replace the keys held.
    """
    try:
        data = orjson.loads(document)
    except orjson.JSONDecodeError:
        raise JwksError("the JWKS is not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise JwksError('the JWKS is not a JSON object with a "keys" array')
    entries = data["keys"]
    if len(entries) > MAX_KEYS:
        raise JwksError(f"the JWKS holds {len(entries)} keys, more than the {MAX_KEYS} accepted")

    known = {k.fingerprint: k for k in previous} if previous is not None else {}
    keys: list[PreparedKey] = []
    for index, entry in enumerate(entries):
        try:
            keys.append(prepare_key(entry, known))
        except JwksError as e:
            kid = entry.get("kid") if isinstance(entry, dict) else None
            label = f"kid {kid!r}" if isinstance(kid, str) and len(kid) <= MAX_KID_LENGTH else f"#{index}"
            log.warning("skipping JWKS key %s from %s: %s", label, source or "the JWKS", e)
    if not keys:
        raise JwksError("the JWKS holds no usable signing key")
    return KeySnapshot(keys)


def prepare_key(entry: object, known: Mapping[bytes, PreparedKey] | None = None) -> PreparedKey:
    """One JWK as a PreparedKey, or JwksError saying why it can't verify signatures."""
    if not isinstance(entry, dict):
        raise JwksError("not a JSON object")
    # Every member is judged by its JSON type before its value is used, so that no odd entry
    # (a list for crv, a number for kid) can raise outside this judgement.
    for name in _STRING_MEMBERS:
        if name in entry and not isinstance(entry[name], str):
            raise JwksError(f"{name} is not a string")
    kid = entry.get("kid")
    if not kid or len(kid) > MAX_KID_LENGTH:
        raise JwksError("no usable kid (tokens choose keys by kid)")
    use = entry.get("use")
    if use is not None and use != "sig":
        raise JwksError("use is not 'sig'")
    if "key_ops" in entry:
        key_ops = entry["key_ops"]
        if not isinstance(key_ops, list) or not all(isinstance(op, str) for op in key_ops):
            raise JwksError("key_ops is not an array of strings")
        if "verify" not in key_ops:
            raise JwksError("key_ops does not include 'verify'")
    if _PRIVATE_MEMBERS & entry.keys():
        raise JwksError("it carries private key material; a JWKS must publish public keys only")

    kty = entry.get("kty")
    public: dict[str, str]
    if kty == "RSA":
        public = {"kty": "RSA", "n": entry.get("n", ""), "e": entry.get("e", "")}
        allowed: tuple[str, ...] = RSA_ALGORITHMS
    elif kty == "EC":
        crv = entry.get("crv")
        if crv not in EC_ALGORITHMS:
            raise JwksError("the EC curve (crv) is not P-256, P-384 or P-521")
        public = {"kty": "EC", "crv": crv, "x": entry.get("x", ""), "y": entry.get("y", "")}
        allowed = (EC_ALGORITHMS[crv],)
    elif kty == "OKP":
        if entry.get("crv") != "Ed25519":
            raise JwksError("the OKP curve (crv) is not Ed25519")
        public = {"kty": "OKP", "crv": "Ed25519", "x": entry.get("x", "")}
        allowed = ("EdDSA",)
    else:
        raise JwksError("the key type (kty) is not RSA, EC or OKP")

    alg = entry.get("alg")
    if alg is not None:
        if alg not in allowed:
            raise JwksError(f"the alg does not fit a {kty} key or is not allowed")
        allowed = (alg,)

    if not all(public.values()):
        raise JwksError(f"the {kty} key's public members are missing")
    fingerprint = orjson.dumps({"kid": kid, "algs": allowed, **public}, option=orjson.OPT_SORT_KEYS)
    if known and fingerprint in known:
        return known[fingerprint]

    if kty == "RSA":
        modulus = _modulus(public["n"])  # before import: joserfc only warns about small keys
        if modulus.bit_length() < MIN_RSA_BITS:
            raise JwksError(f"RSA key of {modulus.bit_length()} bits; at least {MIN_RSA_BITS} are required")
        if has_roca_fingerprint(modulus):
            raise JwksError("the RSA key has the ROCA fingerprint (CVE-2017-15361): it can be factored")
    members: dict[str, str | list[str]] = dict(public)
    try:
        if kty == "RSA":
            key: RSAKey | ECKey | OKPKey = RSAKey.import_key(members)
        elif kty == "EC":
            key = ECKey.import_key(members)
        else:
            key = OKPKey.import_key(members)
    except JoseError as e:
        raise JwksError(f"the key does not import ({type(e).__name__})") from None
    except (ValueError, TypeError):
        raise JwksError("the key's members are not a valid public key") from None

    algorithms = {name: JWSRegistry.algorithms[name] for name in allowed}
    return PreparedKey(kid=kid, kty=kty, algorithms=algorithms, key=key, fingerprint=fingerprint)


def _modulus(n: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(n + "=" * (-len(n) % 4))
    except (binascii.Error, ValueError):
        raise JwksError("the RSA modulus is not base64url") from None
    return int.from_bytes(raw, "big")

"""The attack corpus (issue 5, item 1): forged and malformed tokens and requests, one table.

Each row is a name, a function that makes the request from a `Mint` (real keys, the real
fake issuer, the current time) and the verdict the contract documents: a reason code, or
ACTIVE where the contract says the token is valid (in-leeway times, `aud` arrays, the size
limits themselves). Every row goes through the real service over HTTP and must answer 200
(413 for bodies over 1 MiB), JSON, the expected verdict, no claims when inactive, and
/healthz must still answer 200 afterwards.

A row that cannot fail is worthless, so every row starts from a valid request (one of
BASE_REQUESTS) and changes one thing; `test_undamaged_base_is_active` proves each base is
active. Expected reasons follow the fixed order of texas/validation.py: the header before the
key, the key before the signature, the signature before the payload and its claims.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import hmac
import io
import json
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID
from joserfc import jwe
from joserfc.jwk import RSAKey
from joserfc.jws import JWSRegistry

from tests.support import FakeIssuer, b64, claims_for, make_key, public_jwk, sign_raw
from texas.bodies import MAX_BODY_BYTES
from texas.errors import REASONS
from texas.introspection.validation import MAX_JSON_DEPTH, MAX_TIME, MAX_TOKEN_BYTES

LEEWAY = 60
SLACK = 5  # seconds between "inside the leeway" and "just past it"; generous for slow CI
MARKER = "corpus-marker-4b1d"  # a claim value that an inactive answer must never contain
ACTIVE = None  # the expected reason of a row whose documented verdict is active

RSA = make_key("RS256", "key-1")  # the key conftest's issuer publishes as key-1
PS = make_key("PS256", "ps")  # published with alg PS256: pinned to it
EC = make_key("ES256", "ec")
EC384 = make_key("ES384", "ec384")
ED = make_key("EdDSA", "ed")
ATTACKER = make_key("RS256", "attacker")
# the cryptography objects behind them, typed, for signatures joserfc would not make
RSA_PRIVATE = cast(rsa.RSAPrivateKey, RSA.private_key)
EC_PRIVATE = cast(ec.EllipticCurvePrivateKey, EC.private_key)
EC384_PRIVATE = cast(ec.EllipticCurvePrivateKey, EC384.private_key)
ATTACKER_PRIVATE = cast(rsa.RSAPrivateKey, ATTACKER.private_key)
JWKS = (
    public_jwk(RSA, "key-1"),
    public_jwk(PS, "ps", alg="PS256"),
    public_jwk(EC, "ec"),
    public_jwk(EC384, "ec384"),
    public_jwk(ED, "ed"),
)
AUD = "dev-gcp:team:app"

P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ED25519_L = 2**252 + 27742317777372353535851937790883648493

Key = Any
Client = TestClient[Any, Any]
Signer = Callable[[bytes], bytes]


# --- building requests ---------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A valid token shape: header alg, kid and the private key that signs it."""

    alg: str
    kid: str
    key: Key


BASES: Mapping[str, Base] = {
    "rs256": Base("RS256", "key-1", RSA),
    "ps256": Base("PS256", "key-1", RSA),
    "ps256-pinned": Base("PS256", "ps", PS),
    "es256": Base("ES256", "ec", EC),
    "es384": Base("ES384", "ec384", EC384),
    "eddsa": Base("EdDSA", "ed", ED),
}


@dataclass(frozen=True)
class Body:
    """A raw request body, for rows about the request rather than the token."""

    data: bytes | Callable[[], AsyncIterator[bytes]]
    content_type: str | None = "application/json"
    headers: Mapping[str, str] = field(default_factory=dict)


Request = str | dict[str, Any] | Body  # a token for idporten, JSON fields, or a raw body


class Mint:
    """Makes one base token, or the same token with one thing changed."""

    def __init__(self, issuer: FakeIssuer, base: str = "rs256") -> None:
        self.issuer = issuer
        self.base = BASES.get(base, BASES["rs256"])
        self.now = time.time()

    def claims(self, provider: str = "idporten", **overrides: Any) -> dict[str, Any]:
        """The base claims; an override of `...` removes the claim."""
        return claims_for(
            provider, self.issuer.issuer(provider), now=self.now, **{"marker": MARKER, **overrides}
        )

    def header(self, **overrides: Any) -> dict[str, Any]:
        header: dict[str, Any] = {"alg": self.base.alg, "typ": "JWT", "kid": self.base.kid}
        for name, value in overrides.items():
            if value is ...:
                header.pop(name, None)
            else:
                header[name] = value
        return header

    def signer(self, alg: str | None = None, key: Key = None) -> Signer:
        model = JWSRegistry.algorithms[alg or self.base.alg]
        key = self.base.key if key is None else key
        return lambda message: model.sign(message, key)

    def token(
        self,
        *,
        header: Mapping[str, Any] | bytes | None = None,
        claims: Mapping[str, Any] | bytes | None = None,
        signer: Signer | None = None,
    ) -> str:
        """A compact JWS of the given (or base) header and claims, signed by `signer` (or the
        base key with the base alg, whatever the header says)."""
        payload = (
            claims
            if isinstance(claims, bytes)
            else json.dumps(self.claims() if claims is None else claims).encode()
        )
        return sign_raw(self.header() if header is None else header, payload, signer or self.signer())

    def payload(self, **overrides: Any) -> bytes:
        return json.dumps(self.claims(**overrides)).encode()


Make = Callable[[Mint], Request]


# Row builders: each one changes one thing about the base token.


def header(**changes: Any) -> Make:
    """Header members changed (`...` removes one), signed as the base is."""
    return lambda m: m.token(header=m.header(**changes))


def raw_header(data: bytes) -> Make:
    return lambda m: m.token(header=data)


def claims(**changes: Any) -> Make:
    """Claims changed (`...` removes one), signed as the base is."""
    return lambda m: m.token(claims=m.claims(**changes))


def payload(make: Callable[[Mint], bytes]) -> Make:
    """The payload replaced by exact bytes, signed as the base is."""
    return lambda m: m.token(claims=make(m))


def appended(member: bytes) -> Make:
    """The base claims plus one member written as raw JSON text."""
    return payload(lambda m: m.payload()[:-1] + b", " + member + b"}")


def signed(signer: Callable[[Mint], Signer], **changes: Any) -> Make:
    """Signed another way, with header members changed."""
    return lambda m: m.token(header=m.header(**changes), signer=signer(m))


def resigned(change: Callable[[Mint, bytes], bytes]) -> Make:
    """The base token with its signature bytes changed."""

    def make(m: Mint) -> str:
        token = m.token()
        return with_signature(token, change(m, signature_of(token)))

    return make


def tampered_header(**changes: Any) -> Make:
    """The base token with its header re-encoded with changes, the signature kept."""
    return lambda m: with_part(m.token(), 0, b64(json.dumps(m.header(**changes)).encode()))


def tampered_payload(**changes: Any) -> Make:
    """The base token with its payload re-encoded with changes, the signature kept."""
    return lambda m: with_part(m.token(), 1, b64(m.payload(**changes)))


def edited(change: Callable[[str], str]) -> Make:
    """The base token's text changed."""
    return lambda m: change(m.token())


def flipped(segment: int, index: int) -> Make:
    """The base token with one bit of one decoded segment flipped."""
    return lambda m: flip_bit(m.token(), segment, index)


def padded_segment(segment: int) -> Make:
    """The base token with `=` padding on one segment."""
    return lambda m: with_part(m.token(), segment, padded(parts(m.token())[segment]))


def raw_payload(data: bytes) -> Make:
    return lambda m: m.token(claims=data)


def now_as_a_string(claim: str) -> Make:
    return lambda m: m.token(claims=m.claims(**{claim: str(int(m.now))}))


def by(alg: str, key: Key) -> Callable[[Mint], Signer]:
    return lambda m: m.signer(alg, key)


def constant(signature: bytes) -> Callable[[Mint], Signer]:
    return lambda m: lambda _: signature


def hmac_with(alg: str, secret: Callable[[], bytes]) -> Callable[[Mint], Signer]:
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    return lambda m: lambda message: hmac.new(secret(), message, digest).digest()


def parts(token: str) -> list[str]:
    return token.split(".")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def with_signature(token: str, signature: bytes) -> str:
    h, p, _ = parts(token)
    return f"{h}.{p}.{b64(signature)}"


def signature_of(token: str) -> bytes:
    return unb64(parts(token)[2])


def with_part(token: str, index: int, segment: str) -> str:
    segments = parts(token)
    segments[index] = segment
    return ".".join(segments)


def flip_bit(token: str, part: int, index: int) -> str:
    raw = bytearray(unb64(parts(token)[part]))
    raw[index] ^= 0x01
    return with_part(token, part, b64(bytes(raw)))


def signed_over(m: Mint, payload_segment: str) -> str:
    """A token whose payload segment is exactly `payload_segment`, correctly signed."""
    h = b64(json.dumps(m.header()).encode())
    return f"{h}.{payload_segment}.{b64(m.signer()(f'{h}.{payload_segment}'.encode()))}"


def padded(segment: str) -> str:
    return segment + "=" * (-len(segment) % 4 or 4)


def json_body(fields: Mapping[str, Any]) -> Body:
    return Body(json.dumps(fields).encode())


def form_body(fields: Mapping[str, Any] | list[tuple[str, str]]) -> Body:
    return Body(urlencode(fields).encode(), "application/x-www-form-urlencoded")


def idporten(token: Any, **fields: Any) -> dict[str, Any]:
    return {"identity_provider": "idporten", "token": token, **fields}


def ecdsa(r: int, s: int, size: int = 32) -> bytes:
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def der_es256(m: Mint) -> Signer:
    return lambda message: EC_PRIVATE.sign(message, ec.ECDSA(hashes.SHA256()))


def p384_signs_es256(m: Mint) -> Signer:
    def sign(message: bytes) -> bytes:
        r, s = decode_dss_signature(EC384_PRIVATE.sign(message, ec.ECDSA(hashes.SHA256())))
        return ecdsa(r, s, 48)

    return sign


def pkcs1v15(m: Mint) -> Signer:
    return lambda message: RSA_PRIVATE.sign(message, padding.PKCS1v15(), hashes.SHA256())


def rsa_modulus() -> int:
    return RSA_PRIVATE.public_key().public_numbers().n


def ed25519_s_plus_l(m: Mint, sig: bytes) -> bytes:
    """S + L: the same verification equation, a non-canonical S (a malleability attack)."""
    s = int.from_bytes(sig[32:], "little") + ED25519_L
    return sig[:32] + s.to_bytes(32, "little")


def public_pem(key: Key) -> Callable[[], bytes]:
    return lambda: bytes(key.as_pem(private=False))


def public_der(key: Key) -> Callable[[], bytes]:
    return lambda: bytes(key.as_der(private=False))


def public_jwk_json(key: Key, kid: str) -> Callable[[], bytes]:
    return lambda: json.dumps(public_jwk(key, kid)).encode()


def openssh_ed25519() -> bytes:
    public = cast(ed25519.Ed25519PublicKey, ED.public_key)
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)


def attacker_certificate() -> str:
    """A self-signed X.509 certificate for the attacker's key, base64 DER (x5c form)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(ATTACKER_PRIVATE.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(ATTACKER_PRIVATE, hashes.SHA256())
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def header_key(member: str) -> Any:
    """What an attacker puts in `member` to point at their own key."""
    return {
        "jwk": public_jwk(ATTACKER, "key-1"),
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": [attacker_certificate()],
    }[member]


def nested(depth: int) -> Any:
    """A JSON value of exactly `depth` container levels."""
    value: Any = 1
    for _ in range(depth):
        value = {"n": value}
    return value


def duplicate(name: str, value: Any) -> Callable[[Mint], bytes]:
    """The base payload with a first, false `name` member; the genuine one comes last, which
    is the one a last-wins reader would believe."""

    def make(m: Mint) -> bytes:
        genuine = m.claims()
        assert name.encode().decode("unicode_escape") in genuine
        first = f'"{name}": {json.dumps(value)}, '.encode()
        return b"{" + first + json.dumps(genuine).encode()[1:]

    return make


def raw_time(name: str, literal: str) -> Callable[[Mint], bytes]:
    """The base payload with `name` set to a JSON literal Python's json module won't write."""
    return lambda m: m.payload(**{name: ...})[:-1] + f', "{name}": {literal}}}'.encode()


def noncanonical(segment: str) -> str:
    """The same bytes in base64url with one of the unused trailing bits set."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    if len(segment) % 4 not in (2, 3):
        raise ValueError("this segment length has no unused bits")
    # the lowest bits of the last character are the unused ones; canonical encoders leave them 0
    return segment[:-1] + alphabet[alphabet.index(segment[-1]) ^ 1]


def noncanonical_payload(m: Mint) -> str:
    """The base token with its payload re-spelled non-canonically after signing: the decoded
    bytes are the same, the signed text is not."""
    for pad in range(3):
        token = m.token(claims=m.claims(pad="p" * pad))
        if len(parts(token)[1]) % 4 in (2, 3):
            respelled = noncanonical(parts(token)[1])
            assert unb64(respelled) == unb64(parts(token)[1])
            return with_part(token, 1, respelled)
    raise AssertionError("unreachable: one of three lengths has unused bits")


def noncanonical_signature(m: Mint) -> str:
    """EdDSA signatures are 64 bytes: 86 characters, the last one with four unused bits."""
    token = m.token()
    respelled = noncanonical(parts(token)[2])
    assert unb64(respelled) == signature_of(token) and respelled != parts(token)[2]
    return with_part(token, 2, respelled)


def standard_alphabet_payload(m: Mint) -> str:
    """The base token signed over a payload segment in standard base64 (+ and /)."""
    for pad in range(12):
        segment = base64.b64encode(m.payload(pad="?>" * pad + "???>>>")).rstrip(b"=").decode()
        if "+" in segment or "/" in segment:
            return signed_over(m, segment)
    raise AssertionError("no payload with + or / found")


def unencoded_payload(m: Mint) -> str:
    """RFC 7797 `b64: false`: the signature covers the payload bytes as they are."""
    h = b64(json.dumps(m.header(b64=False, crit=["b64"])).encode())
    return f"{h}.{b64(m.payload())}.{b64(m.signer()(h.encode() + b'.' + m.payload()))}"


def polyglot(m: Mint) -> str:
    """CVE-2022-39227 (python-jwt): JSON serialization whose text also splits on dots into
    three parts, smuggling a forged payload next to a genuine signature."""
    h, p, s = parts(m.token())
    forged = b64(m.payload(pid="00000000000"))
    return (
        '{"  '
        + h
        + "."
        + forged
        + '.":"","protected":"'
        + h
        + '","payload":"'
        + p
        + '","signature":"'
        + s
        + '"}'
    )


def jwe_to_the_public_key(m: Mint) -> str:
    """A real JWE (RSA-OAEP-256, A256GCM) of the base claims, encrypted to the provider's public
    key: anyone can make one, so it never proves anything."""
    public = RSAKey.import_key(RSA.as_dict(private=False))
    return jwe.encrypt_compact(
        {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "key-1"},
        m.payload(),
        public,
        algorithms=["RSA-OAEP-256", "A256GCM"],
    )


def sized_token(length: int) -> Make:
    """The base token padded (a claim, a header member) to exactly `length` bytes."""

    def make(m: Mint) -> str:
        sig_chars = len(parts(m.token())[2])
        for header_pad in range(4):
            h = m.header(pad="h" * header_pad)
            fixed = len(b64(json.dumps(h).encode())) + sig_chars + 2
            guess = (length - fixed) * 3 // 4 - len(m.payload(pad=""))
            for extra in range(max(0, guess - 4), guess + 4):
                c = m.claims(pad="p" * extra)
                if fixed + len(b64(json.dumps(c).encode())) == length:
                    token = m.token(header=h, claims=c)
                    assert len(token) == length
                    return token
        raise AssertionError(f"no padding gives a token of {length} bytes")

    return make


def sized_json(token: str, length: int) -> bytes:
    """A JSON body of exactly `length` bytes carrying a valid token and a padding field."""
    empty = json.dumps(idporten(token, padding="")).encode()
    body = json.dumps(idporten(token, padding="x" * (length - len(empty)))).encode()
    assert len(body) == length
    return body


def sized_body(token: str, length: int) -> Body:
    return Body(sized_json(token, length))


def body_with(extra: bytes, **fields: Any) -> Callable[[Mint], Body]:
    """The base JSON body with one more member written as raw JSON text."""
    return lambda m: Body(json.dumps(idporten(m.token(), **fields))[:-1].encode() + b", " + extra + b"}")


async def chunks(data: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


# --- the corpus ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attack:
    id: str
    make: Make
    reason: str | None  # the documented verdict: a reason code, or ACTIVE
    base: str = "rs256"  # which undamaged request this row changes (see BASE_REQUESTS)
    status: int = 200


def rows() -> list[Attack]:
    a: list[Attack] = []

    def add(id: str, make: Make, reason: str | None, base: str = "rs256", status: int = 200) -> None:
        a.append(Attack(id, make, reason, base, status))

    unsupported, malformed, bad_sig = "unsupported_algorithm", "malformed", "bad_signature"

    # alg none, in its spellings; with the signature stripped and with the real one kept
    for spelling in ("none", "None", "NONE", "nOnE"):
        add(f"alg-{spelling}-empty-signature", signed(constant(b""), alg=spelling), unsupported)
    add("alg-none-real-signature-kept", tampered_header(alg="none"), unsupported)
    add("alg-none-without-kid", signed(constant(b""), alg="none", kid=..., typ=...), unsupported)

    # HMAC keyed with the public key (CVE-2015-9235 and kin): PEM, DER, JWK JSON, OpenSSH
    for alg in ("HS256", "HS384", "HS512"):
        add(f"{alg}-with-rsa-public-pem", signed(hmac_with(alg, public_pem(RSA)), alg=alg), unsupported)
    add(
        "HS256-with-rsa-public-pem-stripped",
        signed(hmac_with("HS256", lambda: public_pem(RSA)().strip()), alg="HS256"),
        unsupported,
    )
    add("HS256-with-rsa-public-der", signed(hmac_with("HS256", public_der(RSA)), alg="HS256"), unsupported)
    add(
        "HS256-with-rsa-public-jwk-json",
        signed(hmac_with("HS256", public_jwk_json(RSA, "key-1")), alg="HS256"),
        unsupported,
    )
    add(
        "HS256-with-ec-public-pem-kid-ec",
        signed(hmac_with("HS256", public_pem(EC)), alg="HS256"),
        unsupported,
        base="es256",
    )
    add(
        "HS256-with-ec-public-der-kid-ec",
        signed(hmac_with("HS256", public_der(EC)), alg="HS256"),
        unsupported,
        base="es256",
    )
    add(
        "HS256-with-ec-public-jwk-json-kid-ec",
        signed(hmac_with("HS256", public_jwk_json(EC, "ec")), alg="HS256"),
        unsupported,
        base="es256",
    )
    add(
        "HS256-with-ed25519-openssh-key (CVE-2022-29217)",
        signed(hmac_with("HS256", openssh_ed25519), alg="HS256"),
        unsupported,
        base="eddsa",
    )
    add("hs256-lower-case", signed(hmac_with("HS256", public_pem(RSA)), alg="hs256"), unsupported)

    # the algorithm must fit the key that kid names (and that key's own `alg`, when it has one)
    add("ES256-under-rsa-kid", signed(by("ES256", EC), alg="ES256"), unsupported)
    add("EdDSA-under-rsa-kid", signed(by("EdDSA", ED), alg="EdDSA"), unsupported)
    add("RS256-under-ec-kid", signed(by("RS256", RSA), alg="RS256"), unsupported, base="es256")
    add("ES384-under-p256-kid", signed(by("ES384", EC384), alg="ES384"), unsupported, base="es256")
    add("ES256-under-p384-kid", signed(by("ES256", EC), alg="ES256"), unsupported, base="es384")
    add("EdDSA-under-ec-kid", signed(by("EdDSA", ED), alg="EdDSA"), unsupported, base="es256")
    add("ES256-under-eddsa-kid", signed(by("ES256", EC), alg="ES256"), unsupported, base="eddsa")
    add(
        "RS256-under-ps256-pinned-kid", signed(by("RS256", PS), alg="RS256"), unsupported, base="ps256-pinned"
    )
    add("kid-of-a-pinned-key-of-the-same-type", header(kid="ps"), unsupported)
    add("PS256-on-an-unpinned-rsa-key", header(), ACTIVE, base="ps256")
    add("alg-Ed25519-RFC9864-name", header(alg="Ed25519"), unsupported, base="eddsa")
    add("alg-ES256K", header(alg="ES256K"), unsupported, base="es256")
    # a signature made with one algorithm, labelled as another that the key also allows
    add("RS256-signature-labelled-PS256", signed(pkcs1v15, alg="PS256"), bad_sig, base="ps256")
    add("RS256-signature-labelled-RS512", header(alg="RS512"), bad_sig)
    add("ES256-signature-made-with-a-p384-key", signed(p384_signs_es256), bad_sig, base="es256")

    # alg spellings that only look right, and alg values that are not strings
    for name, alg in [
        ("cyrillic-dze", "R\u0405256"),
        ("fullwidth", "\uff32\uff33\uff12\uff15\uff16"),
        ("zero-width-space", "RS\u200b256"),
        ("lower-case", "rs256"),
        ("trailing-space", "RS256 "),
        ("trailing-nul", "RS256\u0000"),
    ]:
        add(f"alg-lookalike-{name}", header(alg=alg), unsupported)
    for name, value in [
        ("array", ["RS256"]),
        ("object", {"alg": "RS256"}),
        ("number", 256),
        ("null", None),
        ("true", True),
        ("missing", ...),
    ]:
        add(f"alg-{name}", header(alg=value), malformed)

    # keys named by the header are never trusted: signed by the attacker, pointing at the attacker
    for member in ("jwk", "jku", "x5u", "x5c"):
        add(
            f"header-{member}-attacker-key-real-kid",
            signed(by("RS256", ATTACKER), **{member: header_key(member)}),
            bad_sig,
        )
    add(
        "header-jwk-attacker-key-own-kid (CVE-2018-0114)",
        signed(by("RS256", ATTACKER), kid="attacker", jwk=public_jwk(ATTACKER, "attacker")),
        "unknown_key",
    )
    add(
        "header-jwk-attacker-key-no-kid",
        signed(by("RS256", ATTACKER), kid=..., jwk=public_jwk(ATTACKER, "attacker")),
        malformed,
    )
    add("header-jku-ignored-on-a-genuine-token", header(jku="https://attacker.example/jwks.json"), ACTIVE)

    # kid injection
    for name, kid in [
        ("path-traversal", "../../../../../dev/null"),
        ("sql", "key-1' OR '1'='1"),
        ("sql-union", "x' UNION SELECT 'secret' --"),
        ("command", "key-1|/usr/bin/id"),
        ("url", "https://attacker.example/jwks.json"),
        ("nul-suffix", "key-1\u0000"),
        ("upper-case", "KEY-1"),
        ("trailing-space", "key-1 "),
        ("cyrillic-lookalike", "k\u0435y-1"),
        ("longer-than-any-kid", "k" * 257),
        ("very-long", "k" * 5000),
    ]:
        add(f"kid-{name}", header(kid=kid), "unknown_key")
    for name, value in [
        ("empty", ""),
        ("number", 1),
        ("zero", 0),
        ("null", None),
        ("true", True),
        ("array", ["key-1"]),
        ("object", {"kid": "key-1"}),
        ("missing", ...),
    ]:
        add(f"kid-{name}", header(kid=value), malformed)

    # extensions the service does not understand
    extension = {"exp": 1, "http://example.com/ext": 1}
    for name, crit in [
        ("registered-name", ["exp"]),
        ("private-name", ["http://example.com/ext"]),
        ("empty-list", []),
        ("not-a-list", "exp"),
        ("b64", ["b64"]),
    ]:
        add(f"crit-{name}", header(crit=crit, **extension), malformed)
    add("b64-false-with-crit (RFC 7797)", unencoded_payload, malformed)
    add("b64-true", header(b64=True), malformed)

    # encrypted and nested tokens
    add("jwe-encrypted-to-the-public-key", jwe_to_the_public_key, malformed)
    add("jws-with-two-extra-parts", edited(lambda t: t + ".e30.e30"), malformed)
    add("enc-in-a-three-part-header", header(enc="A256GCM"), malformed)
    add("cty-JWT-declares-a-nested-token", header(cty="JWT"), malformed)
    add("cty-jwt-lower-case", header(cty="jwt"), malformed)
    add(
        "nested-jwt-with-cty-JWT",
        lambda m: m.token(header=m.header(cty="JWT"), claims=m.token().encode()),
        malformed,
    )
    add("nested-jwt-without-cty", payload(lambda m: m.token().encode()), malformed)
    add("nested-jwt-as-a-json-string", payload(lambda m: json.dumps(m.token()).encode()), malformed)
    # typ is advisory (RFC 7519 5.1): texas does not read it
    add("typ-absent", header(typ=...), ACTIVE)
    add("typ-at+jwt", header(typ="at+jwt"), ACTIVE)

    # ECDSA: psychic signatures (CVE-2022-21449), out of range, DER encoding, wrong length
    add("es256-r-s-zero (CVE-2022-21449)", signed(constant(bytes(64))), bad_sig, base="es256")
    add("es384-r-s-zero", signed(constant(bytes(96))), bad_sig, base="es384")
    add("es256-r-s-equal-n", signed(constant(ecdsa(P256_N, P256_N))), bad_sig, base="es256")
    add("es256-r-above-n", resigned(lambda m, s: ecdsa(2**256 - 1, 0)[:32] + s[32:]), bad_sig, base="es256")
    add("es256-s-above-n", resigned(lambda m, s: s[:32] + ecdsa(0, 2**256 - 1)[32:]), bad_sig, base="es256")
    add("es256-r-zero-s-genuine", resigned(lambda m, s: bytes(32) + s[32:]), bad_sig, base="es256")
    add("es256-der-encoded", signed(der_es256), bad_sig, base="es256")
    add("es256-signature-63-bytes", resigned(lambda m, s: s[:63]), bad_sig, base="es256")
    add("es256-signature-65-bytes", resigned(lambda m, s: b"\x00" + s), bad_sig, base="es256")
    add("es256-empty-signature", signed(constant(b"")), bad_sig, base="es256")

    # EdDSA
    add("eddsa-s-plus-l-non-canonical", resigned(ed25519_s_plus_l), bad_sig, base="eddsa")
    add("eddsa-zero-signature", signed(constant(bytes(64))), bad_sig, base="eddsa")
    add("eddsa-bit-flip", flipped(2, 10), bad_sig, base="eddsa")

    # RSA signatures of the wrong length or value
    n = rsa_modulus()
    add("rs256-leading-zero-byte", resigned(lambda m, s: b"\x00" + s), bad_sig)
    add("rs256-last-byte-missing", resigned(lambda m, s: s[:-1]), bad_sig)
    for name, value in [("zero", 0), ("one", 1), ("n", n), ("n-minus-one", n - 1)]:
        add(f"rs256-signature-{name}", signed(constant(value.to_bytes(256, "big"))), bad_sig)
    add("rs256-empty-signature", signed(constant(b"")), bad_sig)

    # tampering after signing
    add("tampered-header-typ", tampered_header(typ="at+jwt"), bad_sig)
    add("tampered-header-alg-RS384", tampered_header(alg="RS384"), bad_sig)
    add("tampered-payload-pid", tampered_payload(pid="00000000000"), bad_sig)
    add("tampered-payload-exp-extended", tampered_payload(exp=2_000_000_000), bad_sig)
    add("tampered-payload-noncanonical-last-char", noncanonical_payload, bad_sig)
    add(
        "flipped-header-bit-in-typ",
        lambda m: flip_bit(m.token(), 0, json.dumps(m.header()).index('"JWT"') + 3),
        bad_sig,
    )
    for name, segment, index in [
        ("payload-bit", 1, 20),
        ("signature-first-bit", 2, 0),
        ("signature-middle-bit", 2, 128),
        ("signature-last-bit", 2, 255),
    ]:
        add(f"flipped-{name}", flipped(segment, index), bad_sig)
    add("flipped-es256-signature-bit", flipped(2, 40), bad_sig, base="es256")
    add(
        "signature-from-another-token",
        resigned(lambda m, s: signature_of(m.token(claims=m.claims(jti="other")))),
        bad_sig,
    )
    add("signature-by-the-attacker-under-the-real-kid", signed(by("RS256", ATTACKER)), bad_sig)
    add(
        "payload-swapped-from-a-maskinporten-token",
        lambda m: with_part(m.token(), 1, parts(m.token(claims=m.claims("maskinporten")))[1]),
        bad_sig,
    )

    # issuer
    add("iss-wrong", claims(iss="https://attacker.example/idporten"), "wrong_issuer")
    add(
        "iss-of-another-provider",
        lambda m: m.token(claims=m.claims(iss=m.issuer.issuer("tokenx"))),
        "wrong_issuer",
    )
    add(
        "iss-trailing-slash",
        lambda m: m.token(claims=m.claims(iss=m.issuer.issuer("idporten") + "/")),
        "wrong_issuer",
    )
    add(
        "iss-upper-case",
        lambda m: m.token(claims=m.claims(iss=m.issuer.issuer("idporten").upper())),
        "wrong_issuer",
    )
    add("iss-array", lambda m: m.token(claims=m.claims(iss=[m.issuer.issuer("idporten")])), "wrong_issuer")
    add("iss-missing", claims(iss=...), "missing_claim")
    add("iss-null", claims(iss=None), "missing_claim")

    # audience
    add("aud-wrong", claims(aud="dev-gcp:team:other"), "wrong_audience")
    add("aud-prefix", claims(aud=AUD + "2"), "wrong_audience")
    add("aud-empty-string", claims(aud=""), "wrong_audience")
    add("aud-missing", claims(aud=...), "missing_claim")
    add("aud-null", claims(aud=None), "missing_claim")
    add("aud-array-without-it", claims(aud=["a", "b"]), "wrong_audience")
    add("aud-array-empty", claims(aud=[]), "wrong_audience")
    add("aud-array-nested", claims(aud=[[AUD]]), "invalid_claim")
    add("aud-array-mixed-types", claims(aud=[AUD, 7]), "invalid_claim")
    add("aud-number", claims(aud=7), "invalid_claim")
    add("aud-object", claims(aud={"aud": AUD}), "invalid_claim")
    add("aud-array-containing-it", claims(aud=["other", AUD]), ACTIVE)
    add(
        "aud-absent-maskinporten",
        lambda m: {
            "identity_provider": "maskinporten",
            "token": m.token(claims=m.claims("maskinporten", aud=...)),
        },
        ACTIVE,
        base="maskinporten",
    )

    # time claims: missing, not numbers, out of range, around the leeway
    for claim in ("exp", "iat", "nbf"):
        add(f"{claim}-missing", claims(**{claim: ...}), ACTIVE if claim == "nbf" else "missing_claim")
        for name, value in [
            ("numeric-string", "1800000000"),
            ("true", True),
            ("false", False),
            ("null", None),
            ("array", [1]),
            ("object", {"t": 1}),
            ("negative", -1),
            ("negative-fraction", -0.5),
            ("after-year-9999", MAX_TIME + 1),
            ("2-to-the-70", 2**70),
            ("1e300", 1e300),
            ("4000-digits", int("9" * 4000)),
        ]:
            add(f"{claim}-{name}", claims(**{claim: value}), "invalid_claim")
        add(f"{claim}-now-as-a-string", now_as_a_string(claim), "invalid_claim")
        for name, literal in [
            ("NaN", "NaN"),
            ("Infinity", "Infinity"),
            ("-Infinity", "-Infinity"),
            ("1e400-overflow", "1e400"),
        ]:
            add(f"{claim}-{name}", payload(raw_time(claim, literal)), malformed)

    def at(claim: str, offset: int, **more: Any) -> Make:
        return lambda m: m.token(claims=m.claims(**{claim: int(m.now) + offset, **more}))

    add("exp-in-the-leeway", at("exp", -LEEWAY + SLACK), ACTIVE)
    add("exp-at-the-leeway", at("exp", -LEEWAY), "expired")
    add("exp-just-past-the-leeway", at("exp", -LEEWAY - SLACK), "expired")
    add("exp-long-ago", claims(exp=1, iat=0, nbf=0), "expired")
    add("exp-year-9999", claims(exp=MAX_TIME), ACTIVE)
    add("exp-fraction", lambda m: m.token(claims=m.claims(exp=m.now + 600.5)), ACTIVE)
    add("nbf-in-the-leeway", at("nbf", LEEWAY - SLACK), ACTIVE)
    add("nbf-just-past-the-leeway", at("nbf", LEEWAY + SLACK), "not_yet_valid")
    add("iat-in-the-leeway", at("iat", LEEWAY - SLACK), ACTIVE)
    add("iat-just-past-the-leeway", at("iat", LEEWAY + SLACK), "issued_in_future")
    add("iat-zero", claims(iat=0, nbf=...), ACTIVE)
    add("iat-year-9999", claims(iat=MAX_TIME), "issued_in_future")

    # duplicate JSON names, signed correctly: which copy would a reader believe?
    add(
        "header-duplicate-alg-same-value",
        raw_header(b'{"alg":"RS256","typ":"JWT","kid":"key-1","alg":"RS256"}'),
        malformed,
    )
    add(
        "header-duplicate-alg-none-last",
        raw_header(b'{"alg":"RS256","typ":"JWT","kid":"key-1","alg":"none"}'),
        malformed,
    )
    add("header-duplicate-kid", raw_header(b'{"alg":"RS256","kid":"attacker","kid":"key-1"}'), malformed)
    add(
        "header-duplicate-via-escape",
        raw_header(b'{"alg":"RS256","kid":"key-1","\\u0061lg":"RS256"}'),
        malformed,
    )
    add("payload-duplicate-iss", payload(duplicate("iss", "https://attacker.example")), malformed)
    add("payload-duplicate-aud", payload(duplicate("aud", "someone-else")), malformed)
    add("payload-duplicate-exp", payload(duplicate("exp", 1)), malformed)
    add("payload-duplicate-pid-via-escape", payload(duplicate("\\u0070id", "00000000000")), malformed)

    # header and payload that are not one JSON object
    for name, raw in [
        ("array", b'["RS256","key-1"]'),
        ("string", b'"RS256"'),
        ("null", b"null"),
        ("number", b"1"),
        ("empty", b""),
        ("truncated", b'{"alg":"RS256","kid":"key-1"'),
        ("trailing-garbage", b'{"alg":"RS256","kid":"key-1"}x'),
        ("two-objects", b'{"alg":"RS256"}{}'),
    ]:
        add(f"header-{name}", raw_header(raw), malformed)
    add(
        "header-whitespace-around-the-object",
        raw_header(b' {"alg":"RS256","typ":"JWT","kid":"key-1"} '),
        ACTIVE,
    )
    for name, raw in [
        ("array", b"[{}]"),
        ("string", b'"claims"'),
        ("number", b"1800000000"),
        ("null", b"null"),
        ("true", b"true"),
        ("empty", b""),
    ]:
        add(f"payload-{name}", raw_payload(raw), malformed)
    add("payload-two-objects", payload(lambda m: m.payload() + b"{}"), malformed)
    add("payload-claims-in-an-array", payload(lambda m: b"[" + m.payload() + b"]"), malformed)

    # invalid UTF-8 and other text encodings
    add("header-invalid-utf8", raw_header(b'{"alg":"RS256","kid":"key-1","x":"\xff"}'), malformed)
    add("payload-invalid-utf8", appended(b'"x": "\xc3\x28"'), malformed)
    add("payload-overlong-utf8-slash", appended(b'"x": "\xc0\xaf"'), malformed)
    add("payload-utf8-encoded-surrogate", appended(b'"x": "\xed\xa0\x80"'), malformed)
    add("payload-raw-control-character", appended(b'"x": "a\x01b"'), malformed)
    add("payload-utf8-bom", payload(lambda m: b"\xef\xbb\xbf" + m.payload()), malformed)
    add("payload-utf16", payload(lambda m: m.payload().decode().encode("utf-16")), malformed)

    # base64url: padding, whitespace, other alphabets, stray dots
    for index, name in enumerate(("header", "payload", "signature")):
        # the payload is decoded only once the signature holds (step 5), so padding added to a
        # signed payload segment breaks the signature first
        add(f"{name}-padded", padded_segment(index), bad_sig if name == "payload" else malformed)
    add("payload-padded-and-signed", lambda m: signed_over(m, padded(b64(m.payload()))), malformed)
    add(
        "payload-with-a-space-signed",
        lambda m: signed_over(m, b64(m.payload())[:10] + " " + b64(m.payload())[10:]),
        malformed,
    )
    add("payload-standard-base64-alphabet", standard_alphabet_payload, malformed)
    add("signature-non-canonical-trailing-bits", noncanonical_signature, malformed, base="eddsa")
    for name, change in [
        ("leading-space", lambda t: " " + t),
        ("trailing-space", lambda t: t + " "),
        ("trailing-newline", lambda t: t + "\n"),
        ("bearer-prefix", lambda t: "Bearer " + t),
        ("space-inside-signature", lambda t: t[:-20] + " " + t[-20:]),
        ("tab-before-signature", lambda t: with_part(t, 2, "\t" + parts(t)[2])),
        ("leading-dot", lambda t: "." + t),
        ("trailing-dot", lambda t: t + "."),
        ("double-dot", lambda t: t.replace(".", "..", 1)),
        ("fullwidth-dots", lambda t: t.replace(".", "\uff0e")),
        ("nul-byte", lambda t: t + "\u0000"),
        ("four-parts", lambda t: t + "." + parts(t)[2]),
    ]:
        add(f"token-{name}", edited(change), malformed)
    add(
        "jws-json-serialization",
        edited(lambda t: json.dumps(dict(zip(("protected", "payload", "signature"), parts(t), strict=True)))),
        malformed,
    )
    add("polyglot-json-and-compact (CVE-2022-39227)", polyglot, malformed)
    add("huge-integer-literal (CVE-2020-10735)", appended(b'"x": ' + b"7" * 5000), malformed)

    # nesting
    add("header-nested-too-deep", header(x=nested(MAX_JSON_DEPTH)), malformed)
    add("payload-nested-at-the-limit", claims(deep=nested(MAX_JSON_DEPTH - 1)), ACTIVE)
    add("payload-nested-one-past-the-limit", claims(deep=nested(MAX_JSON_DEPTH)), malformed)
    add("payload-arrays-nested-10000-deep", appended(b'"x": ' + b"[" * 10000 + b"]" * 10000), malformed)
    add(
        "payload-objects-nested-5000-deep",
        appended(b'"x": ' + b'{"a":' * 5000 + b"1" + b"}" * 5000),
        malformed,
    )

    # claims that look like the verdict: the verdict wins, the claims stay verbatim
    add("claim-active-false", claims(active=False), ACTIVE)
    add("claim-active-false-spelled-with-an-escape", appended(b'"\\u0061ctive": false'), ACTIVE)
    add("claim-error-and-reason", claims(error="x", reason="expired"), ACTIVE)

    # sizes: the token limit and the body limit, at and just past them
    add("token-at-the-length-limit", sized_token(MAX_TOKEN_BYTES), ACTIVE)
    add("token-one-byte-past-the-length-limit", sized_token(MAX_TOKEN_BYTES + 1), malformed)
    add("token-of-a-million-bytes", edited(lambda t: t + "A" * 1_000_000), malformed)
    add("body-at-one-mebibyte", lambda m: sized_body(m.token(), MAX_BODY_BYTES), ACTIVE, base="json-body")
    add(
        "body-one-byte-past-one-mebibyte",
        lambda m: sized_body(m.token(), MAX_BODY_BYTES + 1),
        "bad_request",
        base="json-body",
        status=413,
    )
    add(
        "body-two-mebibytes-chunked",
        lambda m: Body(lambda: chunks(sized_json(m.token(), 2 * MAX_BODY_BYTES))),
        "bad_request",
        base="json-body",
        status=413,
    )
    add(
        "form-body-past-one-mebibyte",
        lambda m: form_body(idporten(m.token(), padding="x" * MAX_BODY_BYTES)),
        "bad_request",
        base="form-body",
        status=413,
    )
    add(
        "gzip-bomb-body",
        lambda m: Body(
            gzip.compress(sized_json(m.token(), 8 * MAX_BODY_BYTES)), headers={"Content-Encoding": "gzip"}
        ),
        "bad_request",
        base="json-body",
        status=413,
    )
    add(
        "gzip-corrupt-body",
        lambda m: Body(
            gzip.compress(json.dumps(idporten(m.token())).encode())[:-12] + bytes(12),
            headers={"Content-Encoding": "gzip", "Connection": "close"},
        ),
        "bad_request",
        base="json-body",
    )
    add(
        "deflate-body-under-the-limit",
        lambda m: Body(
            zlib.compress(json.dumps(idporten(m.token())).encode()), headers={"Content-Encoding": "deflate"}
        ),
        ACTIVE,
        base="json-body",
    )
    add(
        "body-json-nested-2000-deep",
        body_with(b'"x": ' + b"[" * 2000 + b"]" * 2000),
        "bad_request",
        base="json-body",
    )

    # the request around the token
    add(
        "body-text-plain",
        lambda m: Body(json.dumps(idporten(m.token())).encode(), "text/plain"),
        "bad_request",
        base="json-body",
    )
    add(
        "body-without-content-type",
        lambda m: Body(json.dumps(idporten(m.token())).encode(), None),
        "bad_request",
        base="json-body",
    )
    add(
        "body-json-array",
        lambda m: Body(json.dumps([idporten(m.token())]).encode()),
        "bad_request",
        base="json-body",
    )
    add("body-invalid-utf8", body_with(b'"x": "\xff"'), "bad_request", base="json-body")
    # valid JSON (RFC 8259 8.2) in a member texas does not read, like any other such member
    add("body-lone-surrogate-in-an-unread-member", body_with(b'"x": "\\ud800"'), ACTIVE, base="json-body")
    add(
        "token-with-a-lone-surrogate-escape",
        lambda m: Body(json.dumps(idporten(m.token()))[:-2].encode() + b'\\ud800"}'),
        malformed,
        base="json-body",
    )
    # the repeated-field check: the top level only, one parser, and a failure is a refusal
    add(
        "body-repeated-token-behind-1000-deep-nesting",
        lambda m: Body(
            b'{"x": ' + b"[" * 1000 + b"]" * 1000 + b', "identity_provider": "idporten", '
            b'"token": "x.y.z", "token": "' + m.token().encode() + b'"}'
        ),
        "bad_request",
        base="json-body",
    )
    add(
        "body-nested-object-repeating-token",
        body_with(b'"extra": {"token": 1, "token": 2, "identity_provider": "x", "identity_provider": "y"}'),
        ACTIVE,
        base="json-body",
    )
    add(
        "body-gzip-with-trailing-junk",
        lambda m: Body(
            gzip.compress(json.dumps(idporten(m.token())).encode()) + b"junk",
            headers={"Content-Encoding": "gzip"},
        ),
        "bad_request",
        base="json-body",
    )
    add(
        "body-gzip-of-two-members",
        lambda m: Body(
            gzip.compress(json.dumps(idporten(m.token())).encode()) + gzip.compress(b"{}"),
            headers={"Content-Encoding": "gzip"},
        ),
        "bad_request",
        base="json-body",
    )
    add(
        "body-deflate-with-trailing-junk",
        lambda m: Body(
            zlib.compress(json.dumps(idporten(m.token())).encode()) + b"junk",
            headers={"Content-Encoding": "deflate"},
        ),
        "bad_request",
        base="json-body",
    )
    add(
        "token-number",
        lambda m: {"identity_provider": "idporten", "token": 7},
        "bad_request",
        base="json-body",
    )
    add(
        "token-null",
        lambda m: {"identity_provider": "idporten", "token": None},
        "bad_request",
        base="json-body",
    )
    add("token-in-an-array", lambda m: idporten([m.token()]), "bad_request", base="json-body")
    add("token-in-an-object", lambda m: idporten({"jwt": m.token()}), "bad_request", base="json-body")
    add(
        "form-repeated-token",
        lambda m: form_body([("identity_provider", "idporten"), ("token", "x.y.z"), ("token", m.token())]),
        "bad_request",
        base="form-body",
    )
    add(
        "form-invalid-percent-utf8",
        lambda m: Body(urlencode(idporten(m.token())).encode() + b"%FF", "application/x-www-form-urlencoded"),
        malformed,
        base="form-body",
    )
    add(
        "form-too-many-fields",
        lambda m: form_body([*idporten(m.token()).items(), *((f"f{i}", "v") for i in range(40))]),
        "bad_request",
        base="form-body",
    )
    add("provider-unknown", lambda m: {"identity_provider": "github", "token": m.token()}, "unknown_provider")
    add(
        "provider-upper-case",
        lambda m: {"identity_provider": "IDPORTEN", "token": m.token()},
        "unknown_provider",
    )
    add(
        "provider-trailing-space",
        lambda m: {"identity_provider": "idporten ", "token": m.token()},
        "unknown_provider",
    )
    add(
        "provider-disabled",
        lambda m: {"identity_provider": "tokenx", "token": m.token(claims=m.claims("tokenx"))},
        "provider_disabled",
    )
    add(
        "provider-alias-of-a-disabled-one",
        lambda m: {"identity_provider": "entra_id", "token": m.token(claims=m.claims("azuread"))},
        "provider_disabled",
    )
    add(
        "provider-not-a-string",
        lambda m: {"identity_provider": ["idporten"], "token": m.token()},
        "bad_request",
    )
    add(
        "token-for-another-provider",
        lambda m: idporten(m.token(claims=m.claims("maskinporten"))),
        "wrong_issuer",
    )
    add(
        "level-above-the-token",
        lambda m: idporten(
            m.token(claims=m.claims(acr="idporten-loa-substantial")), level="idporten-loa-high"
        ),
        "insufficient_level",
    )
    add(
        "level-without-acr",
        lambda m: idporten(m.token(claims=m.claims(acr=...)), level="Level3"),
        "insufficient_level",
    )
    add("level-unknown", lambda m: idporten(m.token(), level="Level5"), "bad_request")
    # an empty level is a mistake (an unset variable), never "no level": the token has no acr
    for spelling, level in (("empty", ""), ("null", None)):
        add(
            f"level-{spelling}",
            lambda m, level=level: idporten(m.token(claims=m.claims(acr=...)), level=level),
            "bad_request",
        )
    add(
        "form-level-empty",
        lambda m: form_body(idporten(m.token(claims=m.claims(acr=...)), level="")),
        "bad_request",
        base="form-body",
    )
    add(
        "routed-maskinporten-token",  # Maskinporten checks no audience: only when named
        lambda m: {"token": m.token(claims=m.claims("maskinporten"))},
        "unknown_provider",
        base="by-issuer",
    )
    add(
        "routed-forged-signature",
        lambda m: {"token": m.token(signer=m.signer("RS256", ATTACKER))},
        bad_sig,
        base="by-issuer",
    )
    add(
        "routed-issuer-of-a-disabled-provider",
        lambda m: {"token": m.token(claims=m.claims("tokenx"))},
        "unknown_provider",
        base="by-issuer",
    )
    add(
        "routed-without-iss",
        lambda m: {"token": m.token(claims=m.claims(iss=...))},
        "unknown_provider",
        base="by-issuer",
    )
    add(
        "routed-iss-not-a-string",
        lambda m: {"token": m.token(claims=m.claims(iss={"iss": "x"}))},
        "unknown_provider",
        base="by-issuer",
    )
    return a


CORPUS = rows()

# The undamaged request each row starts from: every one must be active (guard test below).
BASE_REQUESTS: Mapping[str, Make] = {
    **{name: (lambda m: m.token()) for name in BASES},
    "json-body": lambda m: json_body(idporten(m.token())),
    "form-body": lambda m: form_body(idporten(m.token())),
    "by-issuer": lambda m: {"token": m.token()},
    "maskinporten": lambda m: {
        "identity_provider": "maskinporten",
        "token": m.token(claims=m.claims("maskinporten")),
    },
}


# --- running a row through the service ---------------------------------------------------------


@pytest.fixture
async def service(issuer: FakeIssuer, make_texas: Any) -> Client:
    """texas with idporten and maskinporten enabled (the others disabled), keys of every type."""
    for provider in ("idporten", "maskinporten"):
        issuer.publish(provider, *JWKS)
    client: Client = await make_texas(("idporten", "maskinporten"), TEXAS_LEEWAY_SECONDS=str(LEEWAY))
    return client


async def send(client: Client, request: Request) -> tuple[int, str, bytes]:
    if isinstance(request, str):
        request = idporten(request)
    if isinstance(request, dict):
        request = json_body(request)
    headers = dict(request.headers)
    if request.content_type is not None:
        headers["Content-Type"] = request.content_type
    data: Any = request.data() if callable(request.data) else request.data
    if isinstance(data, bytes) and len(data) > 64 * 1024:
        data = io.BytesIO(data)  # aiohttp warns (an error here) about large raw bytes
    skip = () if request.content_type is not None else ("Content-Type",)
    response = await client.post("/api/v1/introspect", data=data, headers=headers, skip_auto_headers=skip)
    return response.status, response.content_type, await response.read()


def unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON reader that keeps the last duplicate would hide a second `active`: refuse them."""
    names = [name for name, _ in pairs]
    assert len(set(names)) == len(names), f"the answer repeats a member: {names}"
    return dict(pairs)


async def verdict_of(client: Client, request: Request, status: int = 200) -> dict[str, Any]:
    got, content_type, raw = await send(client, request)
    assert got < 500, f"server error {got}"
    assert got == status, raw[:300]
    assert content_type == "application/json"
    answer = json.loads(raw, object_pairs_hook=unique_members)
    assert isinstance(answer, dict) and isinstance(answer.get("active"), bool), raw[:300]
    if answer["active"] is False:
        assert MARKER.encode() not in raw, "an inactive answer carries no claims"
    return cast(dict[str, Any], answer)


@pytest.mark.parametrize("base", list(BASE_REQUESTS))
async def test_undamaged_base_is_active(service: Client, issuer: FakeIssuer, base: str) -> None:
    """The guard: each row's starting point is active, so each row's verdict is its defect's."""
    answer = await verdict_of(service, BASE_REQUESTS[base](Mint(issuer, base)))
    assert answer["active"] is True, answer
    assert answer["marker"] == MARKER


def test_every_row_names_a_guarded_base_and_a_known_reason() -> None:
    assert len({row.id for row in CORPUS}) == len(CORPUS), "row names are unique"
    for row in CORPUS:
        assert row.base in BASE_REQUESTS, row.id
        assert row.reason is ACTIVE or row.reason in REASONS, row.id


@pytest.mark.parametrize("attack", CORPUS, ids=[row.id for row in CORPUS])
async def test_attack(service: Client, issuer: FakeIssuer, attack: Attack) -> None:
    answer = await verdict_of(service, attack.make(Mint(issuer, attack.base)), attack.status)
    if attack.reason is ACTIVE:
        assert answer["active"] is True, answer
        assert answer["marker"] == MARKER, "claims come back verbatim"
    else:
        assert answer["active"] is False, "accepted a token the contract refuses"
        assert answer["reason"] == attack.reason, answer
        assert isinstance(answer["error"], str) and answer["error"].endswith("."), answer
        allowed = {"active", "error", "reason"}
        if attack.reason == "insufficient_level":
            allowed.add("acr_values")
        assert set(answer) <= allowed, answer
    health = await service.get("/healthz")
    assert health.status == 200


async def test_body_in_an_undecodable_content_encoding_gets_a_verdict(
    service: Client, issuer: FakeIssuer
) -> None:
    body = Body(
        json.dumps(idporten(Mint(issuer).token())).encode(),
        headers={"Content-Encoding": "br", "Connection": "close"},
    )
    answer = await verdict_of(service, body)
    assert answer["active"] is False and answer["reason"] == "bad_request"

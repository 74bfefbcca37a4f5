"""The pure core: one named test per rule, each showing a forged or broken token refused."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding

from tests.support import b64, claims_for, make_key, public_jwk, sign, sign_raw
from texas import errors
from texas.introspection.keys import KeySnapshot, prepare_key
from texas.introspection.validation import MAX_TOKEN_BYTES, Policy, peek_issuer, split, verify_compact

ISS = "https://issuer.example/idporten"
AUD = "dev-gcp:team:app"
NOW = 1_800_000_000.0
POLICY = Policy(issuer=ISS, audience=AUD, leeway=60)

RSA = make_key("RS256", "rsa")
PS = make_key("PS256", "ps")
EC = make_key("ES256", "ec")
ED = make_key("EdDSA", "ed")
KEYS = KeySnapshot(
    [
        prepare_key(public_jwk(RSA, "rsa")),
        prepare_key(public_jwk(PS, "ps", alg="PS256")),
        prepare_key(public_jwk(EC, "ec")),
        prepare_key(public_jwk(ED, "ed")),
    ]
)


def claims(**overrides: Any) -> dict[str, Any]:
    return claims_for("idporten", ISS, now=NOW, **{"aud": AUD, **overrides})


def check(token: str | bytes, policy: Policy = POLICY, now: float = NOW) -> Any:
    return verify_compact(split(token), KEYS, policy, now)


def refused(
    token: str | bytes, error: type[errors.TokenError], policy: Policy = POLICY, now: float = NOW
) -> str:
    with pytest.raises(error) as info:
        check(token, policy, now)
    assert info.value.message.endswith("."), "messages are sentences"
    return info.value.message


# --- accepted --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alg", "key", "kid"),
    [
        ("RS256", RSA, "rsa"),
        ("RS384", RSA, "rsa"),
        ("RS512", RSA, "rsa"),
        ("PS256", RSA, "rsa"),
        ("PS512", RSA, "rsa"),
        ("PS256", PS, "ps"),
        ("ES256", EC, "ec"),
        ("EdDSA", ED, "ed"),
    ],
    ids=["RS256", "RS384", "RS512", "PS256-on-RSA", "PS512-on-RSA", "PS256-pinned", "ES256", "EdDSA"],
)
def test_accepts_every_allowed_algorithm(alg: str, key: Any, kid: str) -> None:
    verified = check(sign(claims(), key, alg=alg, kid=kid))
    assert verified.claims["pid"] == "12345678901"


def test_verified_payload_is_the_signed_bytes() -> None:
    payload = b'{"iss":"%s","aud":"%s","exp":%d,"iat":%d,"big":1180591620717411303424,"f":1.0}' % (
        ISS.encode(),
        AUD.encode(),
        int(NOW) + 60,
        int(NOW),
    )
    verified = check(sign(payload, RSA, kid="rsa"))
    assert verified.payload == payload
    assert verified.claims["big"] == 2**70


def test_aud_array_containing_the_audience_is_accepted() -> None:
    check(sign(claims(aud=["other", AUD]), RSA, kid="rsa"))


def test_fractional_times_are_accepted() -> None:
    check(sign(claims(exp=NOW + 10.5, iat=NOW - 0.25, nbf=NOW - 0.5), RSA, kid="rsa"))


def test_maskinporten_policy_does_not_check_audience() -> None:
    policy = Policy(issuer=ISS, audience=None, leeway=60)
    check(sign(claims(aud=...), RSA, kid="rsa"), policy)


# --- structure ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "....", "eyJhbGciOiJSUzI1NiJ9..", "ey!.ey.sig", "a.b.c=", "æøå.b.c"],
    ids=[
        "empty",
        "one-part",
        "two-parts",
        "four-parts",
        "dots",
        "empty-parts",
        "bad-alphabet",
        "padding",
        "non-ascii",
    ],
)
def test_structurally_broken_tokens_are_malformed(token: str) -> None:
    refused(token, errors.Malformed)


def test_jwe_is_refused() -> None:
    assert "JWE" in refused("eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.a.b.c.d", errors.Malformed)


def test_header_with_enc_is_refused() -> None:
    refused(sign(claims(), RSA, kid="rsa", header={"enc": "A256GCM"}), errors.Malformed)


def test_oversized_token_is_refused_before_parsing() -> None:
    assert "longer" in refused("a" * (MAX_TOKEN_BYTES + 1), errors.Malformed)


@pytest.mark.parametrize(
    "payload",
    [
        b"[1,2]",
        b'"text"',
        b"123",
        b"null",
        b"{",
        b'{"a":1,"a":2}',
        b"\xff\xfe{}",
        b'{"n":NaN}',
        b'{"n":1e400}',
        b"[" * 40 + b"]" * 40,
    ],
    ids=[
        "array",
        "string",
        "number",
        "null",
        "truncated",
        "duplicate-name",
        "bad-utf8",
        "nan",
        "overflow",
        "deep-nesting",
    ],
)
def test_payload_that_is_not_one_plain_json_object_is_malformed(payload: bytes) -> None:
    refused(sign(payload, RSA, kid="rsa"), errors.Malformed)


def test_deeply_nested_object_claim_is_malformed() -> None:
    nested: Any = 1
    for _ in range(40):
        nested = {"n": nested}
    refused(sign(claims(deep=nested), RSA, kid="rsa"), errors.Malformed)


def test_duplicate_header_member_is_malformed() -> None:
    header = b'{"alg":"RS256","kid":"rsa","alg":"none"}'
    token = sign_raw(header, json.dumps(claims()).encode(), lambda m: b"x")
    refused(token, errors.Malformed)


def test_nested_jwt_is_refused() -> None:
    refused(sign(claims(), RSA, kid="rsa", header={"cty": "JWT"}), errors.Malformed)


# --- algorithm ---------------------------------------------------------------------------------


def test_a_header_seen_before_earns_no_trust() -> None:
    """A token that shares a valid token's header is verified on its own, and a refused header
    stays refused however often it comes."""
    valid = sign(claims(), RSA, kid="rsa")
    forged = sign(claims(), make_key("RS256", "attacker"), kid="rsa")
    assert forged.split(".")[0] == valid.split(".")[0]
    check(valid)
    refused(forged, errors.BadSignature)
    unsigned = sign_raw({"alg": "none", "kid": "rsa"}, json.dumps(claims()).encode(), lambda m: b"")
    for _ in range(2):
        refused(unsigned, errors.UnsupportedAlgorithm)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(alg: str) -> None:
    token = sign_raw({"alg": alg, "kid": "rsa"}, json.dumps(claims()).encode(), lambda m: b"")
    assert "alg none" in refused(token, errors.UnsupportedAlgorithm)


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_public_key_is_refused(alg: str) -> None:
    secret = json.dumps(public_jwk(RSA, "rsa")).encode()
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    token = sign_raw(
        {"alg": alg, "kid": "rsa"},
        json.dumps(claims()).encode(),
        lambda m: hmac.new(secret, m, digest).digest(),
    )
    assert "HMAC" in refused(token, errors.UnsupportedAlgorithm)


def test_unknown_algorithm_is_refused() -> None:
    token = sign_raw({"alg": "RS1", "kid": "rsa"}, json.dumps(claims()).encode(), lambda m: b"x")
    refused(token, errors.UnsupportedAlgorithm)


@pytest.mark.parametrize("alg", [None, 256, ["RS256"]], ids=["missing", "number", "array"])
def test_alg_missing_or_not_a_string_is_malformed(alg: Any) -> None:
    header = {"kid": "rsa"} if alg is None else {"alg": alg, "kid": "rsa"}
    refused(sign_raw(header, json.dumps(claims()).encode(), lambda m: b"x"), errors.Malformed)


def test_rsa_key_with_ec_algorithm_is_refused() -> None:
    # An ES256 signature made by some EC key, presented under the RSA key's kid.
    token = sign(claims(), EC, alg="ES256", kid="rsa")
    assert "does not fit" in refused(token, errors.UnsupportedAlgorithm)


def test_ec_key_with_rsa_algorithm_is_refused() -> None:
    refused(sign(claims(), RSA, alg="RS256", kid="ec"), errors.UnsupportedAlgorithm)


def test_key_pinned_to_ps256_refuses_rs256() -> None:
    refused(sign(claims(), PS, alg="RS256", kid="ps"), errors.UnsupportedAlgorithm)


def test_eddsa_key_refuses_es256() -> None:
    refused(sign(claims(), EC, alg="ES256", kid="ed"), errors.UnsupportedAlgorithm)


# --- key selection and header keys ---------------------------------------------------------


def test_token_without_kid_is_refused() -> None:
    assert "kid" in refused(sign(claims(), RSA, kid=None), errors.Malformed)


@pytest.mark.parametrize("kid", ["", 7, None, ["rsa"]], ids=["empty", "number", "null", "array"])
def test_kid_that_is_not_a_nonempty_string_is_malformed(kid: Any) -> None:
    token = sign_raw({"alg": "RS256", "kid": kid}, json.dumps(claims()).encode(), lambda m: b"x")
    refused(token, errors.Malformed)


@pytest.mark.parametrize(
    "kid",
    ["nope", "../../etc/passwd", "' OR 1=1 --", "k" * 5000],
    ids=["unknown", "path", "sql", "very-long"],
)
def test_kid_not_in_the_key_set_is_unknown(kid: str) -> None:
    refused(sign(claims(), RSA, kid=kid), errors.UnknownKey)


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
def test_keys_named_by_the_header_are_never_trusted(member: str) -> None:
    attacker = make_key("RS256", "attacker")
    values = {
        "jwk": public_jwk(attacker, "rsa"),
        "jku": "https://attacker.example/jwks",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
    }
    # Signed by the attacker's key, under the real kid, pointing at the attacker's key.
    token = sign(claims(), attacker, kid="rsa", header={member: values[member]})
    refused(token, errors.BadSignature)


@pytest.mark.parametrize(
    "crit",
    [["exp"], ["b64"], ["http://example.com/ext"], []],
    ids=["registered-name", "b64", "private-name", "empty"],
)
def test_crit_is_refused(crit: list[str]) -> None:
    header = {"alg": "RS256", "kid": "rsa", "crit": crit, "exp": 1, "b64": True, "http://example.com/ext": 1}
    token = sign_raw(header, json.dumps(claims()).encode(), rs256)
    assert "crit" in refused(token, errors.Malformed)


def test_unencoded_payload_b64_false_is_refused() -> None:
    token = sign_raw({"alg": "RS256", "kid": "rsa", "b64": False}, json.dumps(claims()).encode(), rs256)
    refused(token, errors.Malformed)


def rs256(message: bytes) -> bytes:
    return RSA.private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]


# --- signature ---------------------------------------------------------------------------------


def _tamper(token: str, part: int, data: dict[str, Any] | None = None) -> str:
    parts = token.split(".")
    if data is not None:
        parts[part] = b64(json.dumps(data).encode())
    else:
        raw = bytearray(b64decode(parts[part]))
        raw[len(raw) // 2] ^= 1
        parts[part] = b64(bytes(raw))
    return ".".join(parts)


def b64decode(s: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def test_tampered_payload_is_refused() -> None:
    token = sign(claims(), RSA, kid="rsa")
    refused(_tamper(token, 1, claims(pid="00000000000")), errors.BadSignature)


def test_tampered_header_is_refused() -> None:
    token = sign(claims(), RSA, kid="rsa")
    refused(_tamper(token, 0, {"alg": "RS256", "kid": "rsa", "typ": "at+jwt"}), errors.BadSignature)


@pytest.mark.parametrize(
    ("alg", "key", "kid"), [("RS256", RSA, "rsa"), ("ES256", EC, "ec"), ("EdDSA", ED, "ed")]
)
def test_tampered_signature_is_refused(alg: str, key: Any, kid: str) -> None:
    refused(_tamper(sign(claims(), key, alg=alg, kid=kid), 2), errors.BadSignature)


def test_signature_by_another_key_under_a_known_kid_is_refused() -> None:
    refused(sign(claims(), make_key("RS256", "other"), kid="rsa"), errors.BadSignature)


def test_ecdsa_zero_signature_is_refused() -> None:
    token = sign_raw({"alg": "ES256", "kid": "ec"}, json.dumps(claims()).encode(), lambda m: bytes(64))
    refused(token, errors.BadSignature)


def test_ecdsa_der_signature_is_refused() -> None:
    private = EC.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    token = sign_raw(
        {"alg": "ES256", "kid": "ec"},
        json.dumps(claims()).encode(),
        lambda m: private.sign(m, ec.ECDSA(hashes.SHA256())),
    )
    refused(token, errors.BadSignature)


def test_rsa_signature_of_wrong_length_is_refused() -> None:
    private = RSA.private_key
    token = sign_raw(
        {"alg": "RS256", "kid": "rsa"},
        json.dumps(claims()).encode(),
        lambda m: b"\x00" + private.sign(m, padding.PKCS1v15(), hashes.SHA256()),
    )
    refused(token, errors.BadSignature)


def test_non_canonical_signature_encoding_is_malformed() -> None:
    token = sign(claims(), ED, alg="EdDSA", kid="ed")
    head, sig = token.rsplit(".", 1)
    # 64 bytes -> 86 chars whose last char carries 4 unused bits; set one of them
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet[alphabet.index(sig[-1]) | 1]
    if last != sig[-1]:
        refused(f"{head}.{sig[:-1]}{last}", errors.Malformed)


# --- claims ------------------------------------------------------------------------------------


def test_wrong_issuer_is_refused() -> None:
    refused(sign(claims(iss="https://evil.example"), RSA, kid="rsa"), errors.WrongIssuer)


def test_missing_issuer_is_refused() -> None:
    refused(sign(claims(iss=...), RSA, kid="rsa"), errors.MissingClaim)


def test_non_string_issuer_is_refused() -> None:
    refused(sign(claims(iss=[ISS]), RSA, kid="rsa"), errors.WrongIssuer)


@pytest.mark.parametrize(
    "aud",
    ["other", ["other", "another"], [], "dev-gcp:team:app2"],
    ids=["string", "array", "empty-array", "prefix"],
)
def test_wrong_audience_is_refused(aud: Any) -> None:
    refused(sign(claims(aud=aud), RSA, kid="rsa"), errors.WrongAudience)


def test_missing_audience_is_refused() -> None:
    refused(sign(claims(aud=...), RSA, kid="rsa"), errors.MissingClaim)


@pytest.mark.parametrize("aud", [7, {"aud": AUD}, [AUD, 7]], ids=["number", "object", "mixed-array"])
def test_audience_of_wrong_type_is_invalid(aud: Any) -> None:
    refused(sign(claims(aud=aud), RSA, kid="rsa"), errors.InvalidClaim)


@pytest.mark.parametrize("name", ["exp", "iat"])
def test_required_time_claims_must_be_present(name: str) -> None:
    refused(sign(claims(**{name: ...}), RSA, kid="rsa"), errors.MissingClaim)


@pytest.mark.parametrize("name", ["exp", "iat", "nbf"])
@pytest.mark.parametrize(
    "value",
    ["1800000000", True, None, [1], {"t": 1}, -1, 253402300800, 1e300],
    ids=["string", "bool", "null", "array", "object", "negative", "after-9999", "huge"],
)
def test_time_claims_must_be_numbers_in_range(name: str, value: Any) -> None:
    refused(sign(claims(**{name: value}), RSA, kid="rsa"), errors.InvalidClaim)


def test_expired_token_is_refused() -> None:
    refused(sign(claims(exp=NOW - 61), RSA, kid="rsa"), errors.Expired)


def test_expiry_exactly_at_the_leeway_is_refused() -> None:
    refused(sign(claims(exp=NOW - 60), RSA, kid="rsa"), errors.Expired)


def test_expiry_within_the_leeway_is_accepted() -> None:
    check(sign(claims(exp=NOW - 59), RSA, kid="rsa"))


def test_nbf_past_the_leeway_is_refused() -> None:
    refused(sign(claims(nbf=NOW + 61), RSA, kid="rsa"), errors.NotYetValid)


def test_nbf_within_the_leeway_is_accepted() -> None:
    check(sign(claims(nbf=NOW + 60), RSA, kid="rsa"))


def test_iat_past_the_leeway_is_refused() -> None:
    refused(sign(claims(iat=NOW + 61, nbf=...), RSA, kid="rsa"), errors.IssuedInFuture)


def test_iat_within_the_leeway_is_accepted() -> None:
    check(sign(claims(iat=NOW + 60, nbf=...), RSA, kid="rsa"))


def test_forged_token_gets_no_claim_verdict() -> None:
    # Expired *and* forged: the signature verdict comes first.
    forged = sign(claims(exp=NOW - 1000), make_key("RS256", "other"), kid="rsa")
    refused(forged, errors.BadSignature)


def test_peek_issuer_reads_iss_without_verifying() -> None:
    assert peek_issuer(sign(claims(), make_key("RS256", "other"), kid="rsa")) == ISS
    assert peek_issuer(sign(claims(iss=5), RSA, kid="rsa")) is None

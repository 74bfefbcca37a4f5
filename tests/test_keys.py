"""JWKS parsing: each key judged on its own; only a set with no usable key is an error."""

from __future__ import annotations

import base64
import json
import warnings
from typing import Any

import pytest
from joserfc.errors import SecurityWarning
from joserfc.jwk import OctKey, RSAKey

from tests.conftest import introspect
from tests.support import FakeIssuer, claims_for, make_key, public_jwk, roca_key, sign
from texas.errors import JwksError
from texas.introspection.keys import parse_jwks
from texas.introspection.roca import has_roca_fingerprint

RSA = public_jwk(make_key("RS256", "rsa"), "rsa")
EC = public_jwk(make_key("ES256", "ec"), "ec")
ED = public_jwk(make_key("EdDSA", "ed"), "ed")


def doc(*keys: Any) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def test_usable_keys_of_every_type_are_held() -> None:
    snapshot = parse_jwks(doc(RSA, EC, ED))
    assert len(snapshot) == 3
    assert set(snapshot.candidates("rsa")[0].algorithms) == {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
    }
    assert set(snapshot.candidates("ec")[0].algorithms) == {"ES256"}
    assert set(snapshot.candidates("ed")[0].algorithms) == {"EdDSA"}


def test_alg_on_the_key_pins_it() -> None:
    snapshot = parse_jwks(doc({**RSA, "alg": "PS384"}))
    assert set(snapshot.candidates("rsa")[0].algorithms) == {"PS384"}


with warnings.catch_warnings():
    warnings.simplefilter("ignore", SecurityWarning)  # the point: a key too small to trust
    SMALL_RSA = {**RSAKey.generate_key(1024).as_dict(private=False), "kid": "small"}
ED448 = {"kty": "OKP", "crv": "Ed448", "x": "a" * 57, "kid": "ed448"}


@pytest.mark.parametrize(
    "bad",
    [
        {**RSA, "kid": "enc", "use": "enc"},
        {**RSA, "kid": "ops", "key_ops": ["encrypt"]},
        {**make_key("RS256", "priv").as_dict(private=True), "kid": "priv"},
        {**OctKey.generate_key(256).as_dict(), "kid": "oct"},
        SMALL_RSA,
        ED448,
        {**EC, "kid": "ec-rs", "alg": "RS256"},
        {**RSA, "kid": "hs", "alg": "HS256"},
        {**RSA, "kid": "none", "alg": "none"},
        {k: v for k, v in RSA.items() if k != "kid"},
        {**RSA, "kid": 5},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {"kty": "EC", "kid": "offcurve", "crv": "P-256", "x": EC["x"], "y": EC["x"]},
        {"kty": "XYZ", "kid": "xyz"},
        "not an object",
    ],
    ids=[
        "use-enc",
        "key-ops-without-verify",
        "private-key",
        "oct",
        "rsa-1024",
        "ed448",
        "alg-mismatch",
        "hmac-alg",
        "none-alg",
        "no-kid",
        "kid-not-string",
        "bad-modulus",
        "off-curve",
        "unknown-kty",
        "not-object",
    ],
)
def test_unusable_key_is_skipped_not_fatal(bad: Any, caplog: pytest.LogCaptureFixture) -> None:
    snapshot = parse_jwks(doc(bad, RSA))
    assert len(snapshot) == 1 and snapshot.has_kid("rsa")
    assert "skipping JWKS key" in caplog.text


@pytest.mark.parametrize(
    "document",
    [
        b"",
        b"not json",
        b"[]",
        b'{"keys": {}}',
        doc(),
        doc({**RSA, "use": "enc"}),
        json.dumps({"keys": [RSA] * 101}).encode(),
    ],
    ids=["empty", "not-json", "array", "keys-not-array", "no-keys", "only-enc", "too-many"],
)
def test_document_without_a_usable_key_is_an_error(document: bytes) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document)


def test_equal_keys_keep_their_identity_across_documents() -> None:
    first = parse_jwks(doc(RSA, EC))
    second = parse_jwks(doc(EC, RSA), first)
    assert second.candidates("rsa")[0] is first.candidates("rsa")[0]
    assert second.holds(first.candidates("ec")[0])


def test_a_changed_key_under_the_same_kid_is_a_new_key() -> None:
    first = parse_jwks(doc(RSA))
    second = parse_jwks(doc({**public_jwk(make_key("RS256", "rsa2"), "rsa")}), first)
    assert not second.holds(first.candidates("rsa")[0])


# --- every member of every key type, given each wrong JSON type --------------------------------

WRONG_TYPES: dict[str, Any] = {
    "null": None,
    "number": 1,
    "fraction": 1.5,
    "true": True,
    "array": ["P-256"],
    "empty-array": [],
    "object": {"kty": "RSA"},
}
GOOD = {"RSA": RSA, "EC": EC, "OKP": ED}
MEMBERS = {
    "RSA": ("kty", "kid", "use", "alg", "n", "e"),
    "EC": ("kty", "kid", "use", "alg", "crv", "x", "y"),
    "OKP": ("kty", "kid", "use", "alg", "crv", "x"),
}
ODD_ENTRIES = [
    pytest.param({**GOOD[kty], "kid": "odd", member: value}, id=f"{kty}-{member}-{name}")
    for kty, members in MEMBERS.items()
    for member in members
    for name, value in WRONG_TYPES.items()
] + [
    pytest.param({**GOOD[kty], "kid": "odd", "key_ops": value}, id=f"{kty}-key_ops-{name}")
    for kty in GOOD
    for name, value in {
        "null": None,
        "string": "verify",
        "number": 1,
        "true": True,
        "object": {"verify": True},
        "array-of-numbers": [1],
        "array-of-arrays": [["verify"]],
    }.items()
]


@pytest.mark.parametrize("odd", ODD_ENTRIES)
def test_a_member_of_the_wrong_json_type_skips_only_its_key(
    odd: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    snapshot = parse_jwks(doc(odd, RSA, EC, ED))
    assert {key.kid for key in snapshot} == {"rsa", "ec", "ed"}
    assert "skipping JWKS key" in caplog.text


def test_the_right_types_are_still_accepted() -> None:
    entries = [{**key, "key_ops": ["verify"], "kid": f"{kty}-ok"} for kty, key in GOOD.items()]
    assert len(parse_jwks(doc(*entries))) == 3


# --- ROCA (CVE-2017-15361) -------------------------------------------------------------------------


def test_a_key_with_the_roca_fingerprint_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    snapshot = parse_jwks(doc(public_jwk(roca_key(), "roca"), RSA))
    assert not snapshot.has_kid("roca") and snapshot.has_kid("rsa")
    assert "ROCA" in caplog.text and "roca" in caplog.text


def test_roca_fingerprint_test() -> None:
    assert has_roca_fingerprint(int.from_bytes(b64decode(public_jwk(roca_key(), "r")["n"]), "big"))
    for alg, kid in (("RS256", "a"), ("RS256", "b"), ("PS256", "c")):
        n = int.from_bytes(b64decode(public_jwk(make_key(alg, kid), kid)["n"]), "big")
        assert not has_roca_fingerprint(n)
    assert not has_roca_fingerprint(3 * 5 * 7 * 11)  # shares factors with M: not in the group


def b64decode(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


async def test_a_token_signed_by_a_roca_key_is_refused(make_texas: Any, issuer: FakeIssuer) -> None:
    issuer.publish(
        "idporten", public_jwk(roca_key(), "roca"), public_jwk(make_key("RS256", "key-1"), "key-1")
    )
    client = await make_texas(("idporten",))
    t = sign(claims_for("idporten", issuer.issuer("idporten")), roca_key(), kid="roca")
    answer = await introspect(client, t)
    assert answer["active"] is False and answer["reason"] == "unknown_key"

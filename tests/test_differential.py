"""Differential testing (issue 5, item 2): texas's pure core against PyJWT, configured strictly.

Hypothesis makes tokens, valid and mutated (flipped bits in any part, parts swapped between
two tokens, claims and header members changed, removed or retyped, another alg or kid,
another signer) and both implementations judge each one: texas.introspection.validation
(split, then verify_compact) with a KeySnapshot from texas.introspection.keys.parse_jwks, and
jwt.decode with an explicit algorithm list per key, required exp/iat/iss/aud, the issuer, the
audience and the same leeway. They must agree on active versus inactive.

Where texas is stricter on purpose, the case is named by one rule in `by_design` (with why):
there texas must refuse, and PyJWT is not asked. Any other disagreement fails, and
hypothesis shrinks it to a minimal token.

PyJWT reads the real clock (it takes no `now`), so texas gets a fixed NOW taken at import
and every generated time sits at least MARGIN seconds from any boundary: the verdicts cannot
change while the run lasts.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.support import b64, make_key, public_jwk, sign_raw
from texas.errors import TokenError
from texas.introspection.keys import parse_jwks
from texas.introspection.validation import MAX_TIME, Policy, split, verify_compact

ISS = "https://issuer.example/idporten"
AUD = "dev-gcp:team:app"
LEEWAY = 600
MARGIN = 300  # seconds between any generated time and a verdict boundary
NOW = time.time()
POLICY = Policy(issuer=ISS, audience=AUD, leeway=LEEWAY)

RSA = make_key("RS256", "diff-rsa")
PS = make_key("PS256", "diff-ps")
EC = make_key("ES256", "diff-ec")
ED = make_key("EdDSA", "diff-ed")
ATTACKER_RSA = make_key("RS256", "diff-attacker")
ATTACKER_EC = make_key("ES256", "diff-attacker")
ATTACKER_ED = make_key("EdDSA", "diff-attacker")

# kid -> (private key, the algorithms the published key allows)
KEYS: dict[str, tuple[Any, tuple[str, ...]]] = {
    "rsa": (RSA, ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")),
    "ps": (PS, ("PS256",)),
    "ec": (EC, ("ES256",)),
    "ed": (ED, ("EdDSA",)),
}
JWKS = json.dumps(
    {
        "keys": [
            public_jwk(RSA, "rsa"),
            public_jwk(PS, "ps", alg="PS256"),
            public_jwk(EC, "ec"),
            public_jwk(ED, "ed"),
        ]
    }
).encode()
SNAPSHOT = parse_jwks(JWKS)
# PyJWT's side: the public key objects, chosen by kid exactly as texas chooses them
ORACLE_KEYS = {kid: (key.public_key, algs) for kid, (key, algs) in KEYS.items()}
PYJWT_OPTIONS: Any = {
    "verify_signature": True,
    "require": ["exp", "iat", "iss", "aud"],
    "verify_exp": True,
    "verify_nbf": True,
    "verify_iat": True,
    "verify_iss": True,
    "verify_aud": True,
    "strict_aud": False,  # the contract: aud is a string, or an array containing the audience
    # texas judges only what the contract names; PyJWT's optional sub/jti type checks are not
    # in it, so they are off rather than normalised away
    "verify_sub": False,
    "verify_jti": False,
}

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


@pytest.fixture(autouse=True)
def fresh_now() -> None:
    """NOW is fixed per test (not per module), so MARGIN only has to outlast one test."""
    global NOW
    NOW = time.time()


# --- the two verdicts ------------------------------------------------------------------------


def texas_verdict(token: str) -> TokenError | None:
    """None when active; any exception other than a TokenError is a texas bug and propagates."""
    try:
        verify_compact(split(token), SNAPSHOT, POLICY, NOW)
    except TokenError as e:
        return e
    return None


def pyjwt_active(token: str) -> bool:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return False
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in ORACLE_KEYS:
        return False
    key, algorithms = ORACLE_KEYS[kid]
    try:
        jwt.decode(
            token,
            key,
            algorithms=list(algorithms),
            audience=AUD,
            issuer=ISS,
            leeway=LEEWAY,
            options=PYJWT_OPTIONS,
        )
    except jwt.PyJWTError:
        return False
    return True


# --- where texas is stricter by design -------------------------------------------------------


class _Duplicate(ValueError):
    pass


def _loose_json(segment: str) -> tuple[Any, bool]:
    """(value, has duplicate names) of a segment, decoded as leniently as PyJWT would."""
    duplicate = False

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal duplicate
        duplicate |= len({k for k, _ in items}) != len(items)
        return dict(items)

    try:
        raw = base64.urlsafe_b64decode(segment.rstrip("=") + "=" * (-len(segment.rstrip("=")) % 4))
        return json.loads(raw, object_pairs_hook=pairs), duplicate
    except (ValueError, binascii.Error, RecursionError):
        return None, duplicate


def _canonical(segment: str, *, exact: bool) -> bool:
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        return False
    if not exact:
        return True
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return b64(raw) == segment


def by_design(token: str) -> str | None:
    """The rule under which texas refuses a token that PyJWT may accept, or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    # Base64url: texas takes only the unpadded url-safe alphabet, and only the one canonical
    # spelling of the signature (so one signed token has one text); PyJWT accepts trailing "="
    # and ignores the unused low bits of the last character.
    if not all(_canonical(p, exact=(i == 2)) for i, p in enumerate(parts)):
        return "non-canonical base64url"
    header, header_dup = _loose_json(parts[0])
    claims, claims_dup = _loose_json(parts[1])
    # Duplicate member names: which copy would a reader believe? texas refuses; PyJWT keeps the
    # last one.
    if header_dup or claims_dup:
        return "duplicate JSON member names"
    if isinstance(header, dict):
        # RFC 7515 4.1.11: texas understands no extension, and `b64` changes what is signed.
        if "crit" in header or "b64" in header:
            return "crit or b64 in the header"
        # A JWE marker or a nested JWT is never an access token; PyJWT ignores both members.
        if "enc" in header or (isinstance(header.get("cty"), str) and header["cty"].upper() == "JWT"):
            return "enc or cty JWT in the header"
    if isinstance(claims, dict):
        for name in ("exp", "iat", "nbf"):
            if name not in claims:
                continue
            value = claims[name]
            # PyJWT takes int(value): true is 1, "1800000000" is a time. The contract says a
            # time is a JSON number, never a string or a boolean.
            if value is None:
                continue  # both refuse null: PyJWT as missing (exp, iat) or as not an integer (nbf)
            if type(value) not in (int, float):
                return f"{name} is not a JSON number"
            # The contract's range is the years 1970 to 9999; PyJWT takes any integer.
            if not 0 <= value <= MAX_TIME:
                return f"{name} outside 1970..9999"
    # Not rules, for the record: a token without `kid` (texas refuses; the oracle here picks
    # keys by kid too, so it refuses as well) and `iat` beyond the leeway (PyJWT 2.10+ refuses
    # it too as ImmatureSignatureError) need no normalising.
    return None


def check(token: str) -> bool:
    """Compare the two verdicts on one token; returns texas's verdict (True: active)."""
    texas = texas_verdict(token)
    rule = by_design(token)
    note(f"token: {token}")
    note(f"texas: {'active' if texas is None else texas.reason}; by design: {rule}")
    if rule is not None:
        assert texas is not None, f"texas accepted a token its own rule refuses ({rule})"
        return False
    expected = pyjwt_active(token)
    assert (texas is None) == expected, (
        f"texas says {'active' if texas is None else texas.reason}, "
        f"PyJWT says {'active' if expected else 'inactive'}"
    )
    return texas is None


# --- generating tokens ------------------------------------------------------------------------

# Times on a grid: far from NOW, in and past the leeway on both sides, each at least MARGIN
# from the nearest boundary (NOW - LEEWAY for exp, NOW + LEEWAY for iat/nbf).
TIME_OFFSETS = (
    -(10**6),
    -3600 - LEEWAY,
    -LEEWAY - MARGIN,
    -LEEWAY + MARGIN,
    0 - MARGIN,
    LEEWAY - MARGIN,
    LEEWAY + MARGIN,
    3600,
    10**6,
)
times = st.sampled_from(TIME_OFFSETS).map(lambda o: int(NOW) + o) | st.sampled_from(TIME_OFFSETS).map(
    lambda o: NOW + o + 0.5
)
odd_times: st.SearchStrategy[Any] = st.one_of(
    st.sampled_from([0, MAX_TIME, MAX_TIME + 1, -1, -0.5, 2**70, 1e300, 10**20]),
    st.booleans(),
    st.none(),
    st.just(str(int(NOW))),
    st.just([int(NOW)]),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def genuine_claims(draw: st.DrawFn) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": draw(st.sampled_from([ISS, ISS] * 4 + [ISS + "/", "https://other.example"])),
        "aud": draw(st.sampled_from([AUD, AUD, [AUD], ["x", AUD], "other", ["x"]])),
        "exp": draw(times),
        "iat": draw(times),
        "sub": "subject",
        "pid": "12345678901",
    }
    if draw(st.booleans()):
        claims["nbf"] = draw(times)
    claims.update(
        draw(
            st.dictionaries(
                st.text(min_size=1, max_size=8).filter(lambda k: k not in claims),
                json_values,
                max_size=3,
            )
        )
    )
    return claims


ALGS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
    "none",
    "HS256",
    "rs256",
    "",
)


def signer(alg: str, key: Any) -> Callable[[bytes], bytes]:
    from joserfc.jws import JWSRegistry

    model = JWSRegistry.algorithms[alg]
    return lambda message: model.sign(message, key)


@st.composite
def genuine(
    draw: st.DrawFn,
) -> tuple[dict[str, Any], dict[str, Any], str, Callable[[bytes], bytes]]:
    """A header, claims and the right signer: active exactly when the claims hold."""
    kid = draw(st.sampled_from(sorted(KEYS)))
    key, algs = KEYS[kid]
    alg = draw(st.sampled_from(algs))
    header: dict[str, Any] = {"alg": alg, "kid": kid}
    if draw(st.booleans()):
        header["typ"] = draw(st.sampled_from(["JWT", "at+jwt"]))
    return header, draw(genuine_claims()), alg, signer(alg, key)


def compact(header: dict[str, Any] | bytes, payload: bytes, sign: Callable[[bytes], bytes]) -> str:
    return sign_raw(header, payload, sign)


@st.composite
def genuine_tokens(draw: st.DrawFn) -> str:
    header, claims, _, sign = draw(genuine())
    return compact(header, json.dumps(claims).encode(), sign)


def _set_or_delete(target: dict[str, Any], name: str, value: Any) -> None:
    if value is ...:
        target.pop(name, None)
    else:
        target[name] = value


header_edits = st.one_of(
    st.tuples(st.just("alg"), st.sampled_from(ALGS) | json_scalars | st.just(...)),
    st.tuples(st.just("kid"), st.sampled_from([*KEYS, "", "unknown", "RSA"]) | json_scalars | st.just(...)),
    st.tuples(
        st.sampled_from(["crit", "b64", "enc", "cty", "jwk", "jku", "x5c", "typ", "zip"]),
        st.sampled_from([["b64"], ["exp"], [], False, True, "JWT", "jwt", "A256GCM"])
        | json_values
        | st.just(...),
    ),
)
claim_edits = st.tuples(
    st.sampled_from(["iss", "aud", "exp", "iat", "nbf", "sub", "pid"]) | st.text(min_size=1, max_size=6),
    st.one_of(
        times,
        odd_times,
        json_values,
        st.sampled_from([ISS, AUD, [AUD], [AUD, 7], []]),
        st.just(...),
    ),
)


HOW_MANY = (0, 0, 0, 1, 1, 2)


@st.composite
def mutated_tokens(draw: st.DrawFn) -> str:
    header, claims, alg, sign = draw(genuine())
    # how many of each kind of change (hypothesis favours small integers; sampled_from does not)
    for _ in range(draw(st.sampled_from(HOW_MANY))):
        _set_or_delete(header, *draw(header_edits))
    for _ in range(draw(st.sampled_from(HOW_MANY))):
        _set_or_delete(claims, *draw(claim_edits))
    # another signer: an attacker's key of the same type, or HMAC keyed with the public key
    other = draw(st.sampled_from(["same", "same", "same", "attacker", "hmac-public-key", "empty"]))
    if other == "attacker":
        sign = signer(alg, {"ES": ATTACKER_EC, "Ed": ATTACKER_ED}.get(alg[:2], ATTACKER_RSA))
    elif other == "hmac-public-key":
        import hashlib
        import hmac

        secret = RSA.as_pem(private=False)
        sign = lambda m: hmac.new(secret, m, hashlib.sha256).digest()  # noqa: E731
    elif other == "empty":
        sign = lambda m: b""  # noqa: E731
    payload = json.dumps(claims).encode()
    if draw(st.sampled_from([False] * 9 + [True])):  # a duplicate member before the genuine one
        name = draw(st.sampled_from(["iss", "aud", "exp", "kid"]))
        payload = (
            b'{"' + name.encode() + b'": ' + json.dumps(draw(json_scalars)).encode() + b", " + payload[1:]
        )
    token = compact(header, payload, sign)

    edits = st.sampled_from(["flip-byte", "flip-char", "swap-part", "pad"])
    for edit in [draw(edits) for _ in range(draw(st.sampled_from(HOW_MANY)))]:
        parts = token.split(".")
        if len(parts) != 3:
            break
        index = draw(st.integers(0, 2))
        if edit == "flip-byte":  # a bit of the decoded part, re-encoded canonically
            raw = bytearray(base64.urlsafe_b64decode(parts[index] + "=" * (-len(parts[index]) % 4)))
            if raw:
                position = draw(st.integers(0, len(raw) - 1))
                raw[position] ^= 1 << draw(st.integers(0, 7))
                parts[index] = b64(bytes(raw))
        elif edit == "flip-char":  # a bit of the token's text: may leave the alphabet
            if parts[index]:
                position = draw(st.integers(0, len(parts[index]) - 1))
                flipped = chr(ord(parts[index][position]) ^ (1 << draw(st.integers(0, 6))))
                parts[index] = parts[index][:position] + flipped + parts[index][position + 1 :]
        elif edit == "swap-part":  # the same part of another genuine token
            parts[index] = draw(genuine_tokens()).split(".")[index]
        elif edit == "pad":
            parts[index] += "=" * (-len(parts[index]) % 4 or 2)
        token = ".".join(parts)
    return token


DIFFERENTIAL = settings(
    max_examples=800,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_genuine_tokens_agree() -> None:
    """Tokens signed right, with claims that hold or don't: both must agree, and both outcomes
    must actually occur (or the comparison would be empty)."""
    seen: Counter[bool] = Counter()

    @DIFFERENTIAL
    @given(genuine_tokens())
    def run(token: str) -> None:
        seen[check(token)] += 1

    run()
    assert seen[True] >= 20 and seen[False] >= 20, seen


def test_mutated_tokens_agree() -> None:
    seen: Counter[bool] = Counter()

    @DIFFERENTIAL
    @given(mutated_tokens())
    def run(token: str) -> None:
        seen[check(token)] += 1

    run()
    assert seen[True] >= 10, f"mutations should leave some tokens valid: {seen}"


@pytest.mark.parametrize(
    ("token_of", "rule"),
    [
        (
            lambda: compact(
                {"alg": "RS256", "kid": "rsa", "crit": ["b64"], "b64": True},
                json.dumps({"iss": ISS, "aud": AUD, "exp": int(NOW) + 3600, "iat": int(NOW)}).encode(),
                signer("RS256", RSA),
            ),
            "crit or b64 in the header",
        ),
        (
            lambda: compact(
                {"alg": "RS256", "kid": "rsa"},
                json.dumps({"iss": ISS, "aud": AUD, "exp": str(int(NOW) + 3600), "iat": int(NOW)}).encode(),
                signer("RS256", RSA),
            ),
            "exp is not a JSON number",
        ),
        (
            lambda: compact(
                {"alg": "RS256", "kid": "rsa"},
                json.dumps({"iss": ISS, "aud": AUD, "exp": int(NOW) + 3600, "iat": True}).encode(),
                signer("RS256", RSA),
            ),
            "iat is not a JSON number",
        ),
        (
            lambda: compact(
                {"alg": "RS256", "kid": "rsa"},
                json.dumps({"iss": ISS, "aud": AUD, "exp": 2**70, "iat": int(NOW)}).encode(),
                signer("RS256", RSA),
            ),
            "exp outside 1970..9999",
        ),
        (
            lambda: compact(
                {"alg": "RS256", "kid": "rsa"},
                b'{"iss": "x", "iss": "%s", "aud": "%s", "exp": %d, "iat": %d}'
                % (ISS.encode(), AUD.encode(), int(NOW) + 3600, int(NOW)),
                signer("RS256", RSA),
            ),
            "duplicate JSON member names",
        ),
        (
            lambda: (
                compact(
                    {"alg": "RS256", "kid": "rsa"},
                    json.dumps({"iss": ISS, "aud": AUD, "exp": int(NOW) + 3600, "iat": int(NOW)}).encode(),
                    signer("RS256", RSA),
                )
                + "=="
            ),
            "non-canonical base64url",
        ),
    ],
    ids=["crit-b64", "exp-string", "iat-bool", "exp-huge", "duplicate-iss", "padded-signature"],
)
def test_each_rule_is_a_real_difference(token_of: Callable[[], str], rule: str) -> None:
    """Each normalising rule exists because PyJWT really accepts what texas refuses; if PyJWT
    starts refusing one too, the rule can go."""
    token = token_of()
    assert by_design(token) == rule
    assert texas_verdict(token) is not None
    assert pyjwt_active(token), "PyJWT refuses this too: the rule is no longer needed"

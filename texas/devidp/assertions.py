"""Checking the JWTs a client signs to prove who it is (RFC 7523), as the real providers do.

Two uses: the Maskinporten JWT-bearer grant, where the assertion is the grant (RFC 7523 §2.1,
errors are `invalid_grant`), and `private_key_jwt` client authentication at Entra ID and
TokenX (§2.2, errors are `invalid_client`, with `sub` = `iss` = the client id).

The order is fixed: the signature first (against the one key registered for the client), then
the claims, then the `jti`, so a forged assertion never uses up a `jti` or earns a verdict
about its claims. A `jti` is remembered until its assertion expires, which is at most
MAX_LIFETIME after it was issued: the memory is bounded by the rate of genuine assertions.
"""

from __future__ import annotations

import heapq
import math
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError, UnsupportedAlgorithmError
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry

MAX_LIFETIME = 120  # seconds from iat to exp, as Maskinporten and NAIS demand
CLOCK_SKEW = 5  # seconds an iat or nbf may lie in the future
MAX_ASSERTION_BYTES = 16 * 1024
MAX_JTI_LENGTH = 256


class OAuthError(Exception):
    """An RFC 6749 §5.2 error answer: `error` code, a sentence, and the HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def as_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def invalid_client(description: str) -> OAuthError:
    """Client authentication failed: 401, as RFC 6749 §5.2 says."""
    return OAuthError("invalid_client", description, 401)


class ReplayGuard:
    """The `jti`s of accepted assertions, each kept until its assertion expires."""

    def __init__(self) -> None:
        self._expiry: dict[tuple[str, str], float] = {}
        self._queue: list[tuple[float, tuple[str, str]]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def first_use(self, client_id: str, jti: str, exp: float, now: float) -> bool:
        """Remember `jti` until `exp`; False when it was already used (a replay)."""
        while self._queue and self._queue[0][0] <= now:
            _, key = heapq.heappop(self._queue)
            self._expiry.pop(key, None)
        key = (client_id, jti)
        if key in self._expiry:
            return False
        self._expiry[key] = exp
        heapq.heappush(self._queue, (exp, key))
        return True


@dataclass(frozen=True)
class AssertionRules:
    """Whom an assertion must come from and be meant for."""

    client_id: str
    key: Key  # the client's registered key; only its public half is used
    audiences: Collection[str]  # the issuer and the token endpoint
    require_sub: bool  # private_key_jwt: sub = iss = client id
    error: str  # invalid_client or invalid_grant
    noun: str = "client assertion"  # in the sentences: "client assertion" or "assertion"


def verify_assertion(
    assertion: str, rules: AssertionRules, replay: ReplayGuard, now: float
) -> Mapping[str, Any]:
    """The claims of a genuine, fresh, first-used assertion; OAuthError otherwise."""

    n = rules.noun

    def refuse(sentence: str) -> OAuthError:
        if rules.error == "invalid_client":
            return invalid_client(sentence)
        return OAuthError(rules.error, sentence)

    if len(assertion) > MAX_ASSERTION_BYTES or assertion.count(".") != 2:
        raise refuse(f"The {n} is not a compact JWT.")
    alg = str(rules.key.alg)
    registry = JWSRegistry(algorithms=[alg], strict_check_header=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # joserfc flags EdDSA as deprecated (RFC 9864)
            token = jwt.decode(assertion, rules.key, algorithms=[alg], registry=registry)
    except UnsupportedAlgorithmError:
        raise refuse(f"The {n} must be signed with {alg}, the client key's algorithm.") from None
    except BadSignatureError:
        raise refuse(f"The {n}'s signature does not verify with the client's key.") from None
    except (JoseError, ValueError, TypeError):
        raise refuse(f"The {n} is not a signed JWT.") from None
    kid = token.header.get("kid")
    if kid is not None and kid != rules.key.kid:
        raise refuse(f"The {n}'s kid is not the client's key.")
    claims = token.claims

    if claims.get("iss") != rules.client_id:
        raise refuse(f"The {n}'s iss is not the client id.")
    if rules.require_sub and claims.get("sub") != rules.client_id:
        raise refuse(f"The {n}'s sub is not the client id.")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if not any(isinstance(a, str) and a in rules.audiences for a in audiences):
        raise refuse(f"The {n}'s aud must be one of: {', '.join(rules.audiences)}.")

    exp, iat, nbf = _time(claims, "exp", n, refuse), _time(claims, "iat", n, refuse), claims.get("nbf")
    if exp <= now:
        raise refuse(f"The {n} has expired.")
    if iat > now + CLOCK_SKEW:
        raise refuse(f"The {n} is issued in the future.")
    if exp - iat > MAX_LIFETIME:
        raise refuse(f"The {n} lives longer than {MAX_LIFETIME} seconds (exp - iat).")
    if nbf is not None and _time(claims, "nbf", n, refuse) > now + CLOCK_SKEW:
        raise refuse(f"The {n} is not valid yet (nbf).")

    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise refuse(f"The {n} needs a jti, a unique string.")
    if not replay.first_use(rules.client_id, jti, exp, now):
        raise refuse(f"The {n}'s jti was used before: make a new assertion for every request.")
    return claims


def _time(claims: Mapping[str, Any], name: str, n: str, refuse: Callable[[str], OAuthError]) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise refuse(f"The {n} needs {name}, a number of seconds.")
    return float(value)

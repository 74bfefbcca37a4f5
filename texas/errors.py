"""The error hierarchy.

    TexasError
    ├── ConfigError        bad configuration; stops start-up with one line
    ├── JwksError          a key set or discovery document could not be had (infrastructure)
    ├── TokenError         a verdict: the token is inactive, with a stable `reason` code
    └── GrantError         a token request (/api/v1/token, /token/exchange) was not answered
        ├── InvalidTokenRequest     the caller's mistake: 400 invalid_request
        ├── IdentityProviderRefused the identity provider's own OAuth error, passed on
        └── IdentityProviderFailed  unreachable, timed out, 5xx or nonsense: 502 server_error

`TokenError.reason` is one of `REASONS` (the contract's list) and is what apps branch on;
`str(error)` is the human sentence that goes into the `error` field. A `GrantError` carries
the HTTP status, OAuth `error` code and `error_description` sentence of its answer.
"""

from __future__ import annotations

REASONS: frozenset[str] = frozenset(
    {
        "bad_request",
        "unknown_provider",
        "provider_disabled",
        "malformed",
        "unsupported_algorithm",
        "unknown_key",
        "bad_signature",
        "keys_unavailable",
        "wrong_issuer",
        "wrong_audience",
        "missing_claim",
        "invalid_claim",
        "expired",
        "not_yet_valid",
        "issued_in_future",
        "insufficient_level",
        "internal_error",
    }
)


class TexasError(Exception):
    """Base of every error texas raises on purpose."""


class ConfigError(TexasError):
    """Start-up configuration is missing, unparsable or contradictory."""


class JwksError(TexasError):
    """Fetching or reading a JWKS or discovery document failed."""


class TokenError(TexasError):
    """The token (or the request carrying it) is not acceptable."""

    reason: str = "malformed"

    def __init__(self, message: str, **extra: str) -> None:
        super().__init__(message)
        self.message = message
        # Extra response fields the contract attaches to some reasons (acr_values).
        self.extra = extra


class BadRequest(TokenError):
    reason = "bad_request"


class UnknownProvider(TokenError):
    reason = "unknown_provider"


class ProviderDisabled(TokenError):
    reason = "provider_disabled"


class Malformed(TokenError):
    reason = "malformed"


class UnsupportedAlgorithm(TokenError):
    reason = "unsupported_algorithm"


class UnknownKey(TokenError):
    reason = "unknown_key"


class BadSignature(TokenError):
    reason = "bad_signature"


class KeysUnavailable(TokenError):
    reason = "keys_unavailable"


class WrongIssuer(TokenError):
    reason = "wrong_issuer"


class WrongAudience(TokenError):
    reason = "wrong_audience"


class MissingClaim(TokenError):
    reason = "missing_claim"


class InvalidClaim(TokenError):
    reason = "invalid_claim"


class Expired(TokenError):
    reason = "expired"


class NotYetValid(TokenError):
    reason = "not_yet_valid"


class IssuedInFuture(TokenError):
    reason = "issued_in_future"


class InsufficientLevel(TokenError):
    reason = "insufficient_level"


class GrantError(TexasError):
    """A token request that ends without a token: the answer's status, OAuth code and sentence."""

    status: int = 400
    error: str = "invalid_request"

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidTokenRequest(GrantError):
    """The caller's mistake, or a provider not configured for the request."""


class IdentityProviderRefused(GrantError):
    """The identity provider answered 4xx with an OAuth error: passed on as it came."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error


class IdentityProviderFailed(GrantError):
    """The identity provider could not be reached, timed out, answered 5xx or nonsense.
    `retryable` marks failures that a retry (or a cached token) may paper over."""

    status = 502
    error = "server_error"

    def __init__(
        self, description: str, *, retryable: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(description)
        self.retryable = retryable
        self.retry_after = retry_after


class InternalError(TokenError):
    """A fault inside texas, not the caller's mistake: answered inactive, logged, counted."""

    reason = "internal_error"

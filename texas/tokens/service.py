"""What the two token endpoints do once a request is parsed: pick the provider, check it is
configured for the request, judge the user token when texas can, and answer from the cache or
the identity provider.

Which provider does what:

    /api/v1/token           maskinporten (JWT-bearer grant), azuread (client_credentials)
    /api/v1/token/exchange  tokenx (RFC 8693 token exchange), azuread (on-behalf-of)
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import aiohttp
import orjson

from texas.config import GrantConfig
from texas.errors import (
    IdentityProviderFailed,
    InvalidTokenRequest,
    JwksError,
    TokenError,
)
from texas.introspection.handler import Introspector, IntrospectRequest
from texas.introspection.providers import Provider, Providers
from texas.introspection.validation import MAX_TOKEN_BYTES, decode_payload, split, time_claim
from texas.tokens import grants
from texas.tokens.cache import GrantCache, Served, exchange_key, machine_key
from texas.tokens.client import Issued, TokenClient

log = logging.getLogger(__name__)

MACHINE = ("maskinporten", "azuread")
# Verdicts that say nothing against the user token: the provider then judges it itself.
_NOT_THE_TOKENS_FAULT = frozenset({"active", "keys_unavailable"})
EXCHANGE = ("tokenx", "azuread")


class MachineRequest(NamedTuple):
    identity_provider: str
    target: str
    resource: str | None = None
    authorization_details: list[Any] | None = None
    skip_cache: bool = False


class ExchangeRequest(NamedTuple):
    identity_provider: str
    target: str
    user_token: str
    skip_cache: bool = False


class Issuer:
    """One provider as a token issuer: its grant settings, and the issuer and token endpoint
    resolved (explicit, else from discovery) once, by the first request that needs them."""

    def __init__(self, provider: Provider, grant: GrantConfig) -> None:
        self.provider = provider
        self.grant = grant
        self._lock = asyncio.Lock()
        self._resolved: tuple[grants.Client, str] | None = None

    @property
    def name(self) -> str:
        return self.provider.name

    def check_configured(self) -> None:
        missing = self.grant.missing(discovery=self.provider.config.well_known_url is not None)
        if missing is not None:
            raise InvalidTokenRequest(
                f"The identity provider {self.name} is not configured for token requests: "
                f"{missing} is not set."
            )

    async def resolve(self) -> tuple[grants.Client, str]:
        """The client (id, key, issuer as audience) and the token endpoint."""
        if self._resolved is not None:
            return self._resolved
        async with self._lock:  # one discovery fetch for all the first requests
            if self._resolved is None:
                self._resolved = await self._resolve()
        return self._resolved

    async def _resolve(self) -> tuple[grants.Client, str]:
        provider = self.provider
        try:
            if provider.issuer is None:
                await provider.locate()
            endpoint = self.grant.token_endpoint or await provider.discover_token_endpoint()
        except (JwksError, aiohttp.ClientError) as e:
            reason = str(e) if isinstance(e, JwksError) else f"the request failed ({type(e).__name__})"
            raise IdentityProviderFailed(
                f"The discovery document of {self.name} could not be had: {reason}.", retryable=True
            ) from None
        if endpoint is None:
            raise InvalidTokenRequest(
                f"The identity provider {self.name} is not configured for token requests: "
                f"{self.grant.spec.token_endpoint} is not set and its discovery document "
                "has no token_endpoint."
            )
        assert provider.issuer is not None and self.grant.client_id and self.grant.private_jwk
        return grants.Client(self.grant.client_id, self.grant.private_jwk, provider.issuer), endpoint


class Tokens:
    """Machine tokens and exchanges, for the handlers."""

    def __init__(
        self,
        providers: Providers,
        client: TokenClient,
        cache: GrantCache,
        *,
        introspector: Introspector | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.providers = providers
        self.client = client
        self.cache = cache
        self.introspector = introspector  # None: user tokens go to the provider unjudged
        self.clock = clock
        self._issuers = {p.name: Issuer(p, p.config.grant) for p in providers if p.config.grant is not None}

    def issuer(self, requested: str, kinds: tuple[str, ...], what: str) -> Issuer:
        try:
            provider = self.providers.get(requested)
        except TokenError as e:
            raise InvalidTokenRequest(e.message) from None
        issuer = self._issuers.get(provider.name)
        if issuer is None or provider.name not in kinds:
            names = " or ".join("azuread (entra_id)" if k == "azuread" else k for k in kinds)
            raise InvalidTokenRequest(
                f"The identity provider {provider.name} does not issue {what}; use {names}."
            )
        issuer.check_configured()
        return issuer

    async def machine(self, request: MachineRequest) -> tuple[str, Served]:
        """A machine token: the provider's name (for metrics) and the token."""
        issuer = self.issuer(request.identity_provider, MACHINE, "machine tokens")
        maskinporten = issuer.name == "maskinporten"
        if request.authorization_details is not None and not maskinporten:
            raise InvalidTokenRequest("The field authorization_details is for maskinporten only.")

        def form(client: grants.Client) -> dict[str, str]:
            if maskinporten:
                return grants.maskinporten(
                    client,
                    request.target,
                    self.clock(),
                    resource=request.resource,
                    authorization_details=request.authorization_details,
                )
            return grants.client_credentials(client, request.target, self.clock())

        key = machine_key(issuer.name, request.target, request.resource, request.authorization_details)
        served = await self.cache.get(
            key,
            lambda: self._fetch(issuer, form),
            endpoint="token",
            provider=issuer.name,
            skip_cache=request.skip_cache,
            refresh_ahead=True,
        )
        return issuer.name, served

    async def exchange(self, request: ExchangeRequest) -> tuple[str, Served]:
        """A token on behalf of the user: the provider's name (for metrics) and the token."""
        issuer = self.issuer(request.identity_provider, EXCHANGE, "tokens on behalf of a user")
        user_token = request.user_token
        claims = _unverified_claims(user_token)  # read once, for the judge and the cache
        await self._judge(user_token, claims)

        def form(client: grants.Client) -> dict[str, str]:
            build = grants.token_exchange if issuer.name == "tokenx" else grants.on_behalf_of
            return build(client, request.target, user_token, self.clock())

        user_exp = _exp(claims)
        key = exchange_key(issuer.name, request.target, user_token)
        served = await self.cache.get(
            key,
            lambda: self._fetch(issuer, form),
            endpoint="exchange",
            provider=issuer.name,
            skip_cache=request.skip_cache,
            user_exp=user_exp if user_exp is not None else -1.0,
        )
        return issuer.name, served

    async def _judge(self, user_token: str, claims: dict[str, Any] | None) -> None:
        """Refuse a user token texas can judge and finds invalid (expired, forged, for another
        audience...) before it costs a call to the identity provider. Judged with the same
        core and verified-token cache as /api/v1/introspect; a token whose `iss` is no enabled
        provider's, or one that is not even readable, is left to the identity provider."""
        if self.introspector is None:
            return
        if claims is not None:
            iss = claims.get("iss")
            issuer = iss if isinstance(iss, str) else None
        else:
            # too broken for the strict read (a signature that is not canonical base64url,
            # say), yet it may still name an issuer texas judges: then it is judged malformed
            issuer = _named_issuer(user_token)
        try:
            provider = self.providers.by_issuer(issuer)
        except TokenError:
            return
        verdict = await self.introspector(IntrospectRequest(provider.name, user_token, None))
        if verdict.outcome in _NOT_THE_TOKENS_FAULT:
            return
        sentence = orjson.loads(verdict.body)["error"]
        raise InvalidTokenRequest(f"The user token is not valid ({verdict.outcome}): {sentence}")

    async def _fetch(self, issuer: Issuer, form: Callable[[grants.Client], dict[str, str]]) -> Issued:
        deadline = self.client.deadline()
        try:
            async with asyncio.timeout_at(deadline):
                client, endpoint = await issuer.resolve()
        except TimeoutError:
            raise IdentityProviderFailed(
                f"The discovery document of {issuer.name} did not arrive within {self.client.timeout:g} s.",
                retryable=True,
            ) from None
        return await self.client.request(issuer.name, endpoint, lambda: form(client), deadline)


def _unverified_claims(token: str) -> dict[str, Any] | None:
    """The payload read strictly but unverified, or None when the token is not readable."""
    try:
        claims, _ = decode_payload(split(token))
    except TokenError:
        return None
    return claims


def _exp(claims: dict[str, Any] | None) -> float | None:
    """Unverified, and used only to shorten how long the exchanged token is cached; a token
    without a readable exp is not cached at all."""
    if claims is None:
        return None
    try:
        return float(time_claim(claims, "exp", "expiry"))
    except TokenError:
        return None


def _named_issuer(token: str) -> str | None:
    """The `iss` a broken token names, read as leniently as the strict read is strict; used
    only to decide whether texas judges the token itself."""
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > MAX_TOKEN_BYTES:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:  # binascii.Error and orjson.JSONDecodeError are ValueErrors
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) else None

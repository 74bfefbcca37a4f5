"""Providers: a configured identity provider with its resolved metadata and key set.

Explicit issuer and JWKS URI win over the discovery document; discovery is fetched when one of
them is missing, as part of the first key fetch (so an unreachable discovery document behaves
like an unreachable JWKS: the service starts, /readyz says 503, retries run in the background),
and read again on the refresh schedule. A document is believed only for the issuer whose
well-known URL served it, and only with an https `jwks_uri` (loopback excepted).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from urllib.parse import urlsplit

import aiohttp
import orjson

from texas.config import ALIASES, PROVIDER_NAMES, Config, ProviderConfig, transport_ok
from texas.errors import JwksError, ProviderDisabled, UnknownProvider
from texas.introspection.jwks import JwksSettings, RemoteJwks, read_limited
from texas.introspection.validation import Policy
from texas.ops import telemetry

log = logging.getLogger(__name__)


class Provider:
    def __init__(
        self,
        config: ProviderConfig,
        session: aiohttp.ClientSession,
        settings: JwksSettings,
        leeway: float,
        *,
        insecure_http: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = config.name
        self.config = config
        self._session = session
        self._settings = settings
        self._leeway = leeway
        self._insecure_http = insecure_http
        self._clock = clock
        self._discovered_at = -math.inf
        self.issuer: str | None = None
        self.jwks_uri: str | None = None
        self.policy: Policy | None = None
        self._well_known: str | None = None  # None: explicit issuer and JWKS URI, no discovery
        # For the token endpoints (texas.tokens): the discovery document's token_endpoint.
        self.token_endpoint: str | None = None
        self._discovered = False
        if config.issuer and config.jwks_uri:
            self._resolve(config.issuer, config.jwks_uri)
        else:
            self._well_known = config.well_known_url
        self.jwks = RemoteJwks(self.name, self.locate, session, settings, clock=clock)

    async def locate(self) -> str:
        """The JWKS URI. With discovery, the document is read before the first key fetch and
        again before any fetch once `refresh` seconds have passed, so a provider that moves
        its keys is followed; when a re-read fails, the URI held is used."""
        if self._well_known is not None and self._clock() - self._discovered_at >= self._settings.refresh:
            await self._rediscover(self._well_known)
        assert self.jwks_uri is not None
        return self.jwks_uri

    async def _rediscover(self, url: str) -> None:
        try:
            issuer, jwks_uri = await self._discover(url)
        except (JwksError, aiohttp.ClientError) as e:
            telemetry.inc_discovery_fetch(self.name, "error")
            if isinstance(e, JwksError):
                reason = str(e)
            else:
                reason = f"the discovery document could not be fetched ({type(e).__name__})"
            if self.jwks_uri is None:
                raise JwksError(reason) from None
            log.warning("%s; keeping the JWKS URI of %s: %s", reason, self.name, self.jwks_uri)
            return
        telemetry.inc_discovery_fetch(self.name, "ok")
        self._discovered_at = self._clock()
        self._resolve(self.config.issuer or issuer, self.config.jwks_uri or jwks_uri)

    def _resolve(self, issuer: str, jwks_uri: str) -> None:
        if (issuer, jwks_uri) == (self.issuer, self.jwks_uri):
            return
        self.issuer = issuer
        self.jwks_uri = jwks_uri
        self.policy = Policy(issuer=issuer, audience=self.config.audience, leeway=self._leeway)
        log.info("provider %s: issuer %s, JWKS %s", self.name, issuer, jwks_uri)

    async def _discover(self, url: str) -> tuple[str, str]:
        async with self._session.get(url, headers={"Accept": "application/json"}, allow_redirects=False) as r:
            if r.status != 200:
                raise JwksError(f"the discovery document answered HTTP {r.status}")
            body = await read_limited(r)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise JwksError("the discovery document is not valid JSON") from None
        if not isinstance(document, dict):
            raise JwksError("the discovery document is not a JSON object")
        issuer, jwks_uri = document.get("issuer"), document.get("jwks_uri")
        if not isinstance(issuer, str) or not issuer:
            raise JwksError("the discovery document has no issuer")
        if not issuer_matches(issuer, url):
            raise JwksError("the discovery document's issuer is not the URL it was fetched from")
        if not isinstance(jwks_uri, str) or not transport_ok(jwks_uri, insecure_http=self._insecure_http):
            raise JwksError("the discovery document has no https jwks_uri")
        token_endpoint = document.get("token_endpoint")
        if isinstance(token_endpoint, str) and transport_ok(
            token_endpoint, insecure_http=self._insecure_http
        ):
            self.token_endpoint = token_endpoint
        self._discovered = True
        return issuer, jwks_uri

    async def discover_token_endpoint(self) -> str | None:
        """The discovery document's token_endpoint, for the token endpoints: read along with
        the keys' discovery, or fetched once here when explicit issuer and JWKS URI made that
        unnecessary. Raises JwksError or aiohttp.ClientError when the document cannot be had."""
        if not self._discovered and self.config.well_known_url is not None:
            await self._discover(self.config.well_known_url)
        return self.token_endpoint

    def readiness(self) -> dict[str, object]:
        keys = self.jwks.current()
        state: dict[str, object] = {
            "ready": keys is not None and self.policy is not None,
            "keys": len(keys) if keys is not None else 0,
            "age_seconds": _round(self.jwks.age()),
        }
        if self.jwks.last_error is not None:
            state["error"] = f"The last JWKS fetch failed: {self.jwks.last_error}."
        return state


_WELL_KNOWN = ("/.well-known/openid-configuration", "/.well-known/oauth-authorization-server")


def issuer_matches(issuer: str, well_known_url: str) -> bool:
    """OpenID Connect Discovery 4.3 and RFC 8414 3.3: a metadata document speaks for the issuer
    whose well-known URL it came from, else anyone who can serve a document there could name
    any issuer. The well-known suffix follows the issuer (OpenID) or is put before its path
    (RFC 8414). One trailing slash on the issuer is allowed: Maskinporten's issuer is
    `https://maskinporten.no/` beside `https://maskinporten.no/.well-known/...`."""
    base = issuer[:-1] if issuer.endswith("/") else issuer
    parts = urlsplit(base)
    for suffix in _WELL_KNOWN:
        if well_known_url == base + suffix:
            return True
        if parts.path and well_known_url == f"{parts.scheme}://{parts.netloc}{suffix}{parts.path}":
            return True
    return False


class Providers:
    """The enabled providers, by name and by issuer."""

    def __init__(self, providers: Mapping[str, Provider]) -> None:
        self._by_name = dict(providers)

    @classmethod
    def from_config(cls, config: Config, session: aiohttp.ClientSession) -> Providers:
        settings = JwksSettings(
            refresh=config.jwks_refresh_seconds,
            min_refresh=config.jwks_min_refresh_seconds,
            fetch_timeout=config.jwks_fetch_timeout_seconds,
            max_stale=config.jwks_max_stale_seconds,
        )
        leeway, insecure_http = config.leeway_seconds, config.insecure_http
        return cls(
            {
                p.name: Provider(p, session, settings, leeway, insecure_http=insecure_http)
                for p in config.providers
            }
        )

    def __iter__(self) -> Iterator[Provider]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, requested: str) -> Provider:
        """The provider a request names; unknown and disabled are different verdicts."""
        provider = self._by_name.get(requested)
        if provider is not None:
            return provider
        name = ALIASES.get(requested, requested)
        provider = self._by_name.get(name)
        if provider is not None:
            return provider
        if name in PROVIDER_NAMES:
            raise ProviderDisabled(f"The identity provider {name} is not enabled in this service.")
        raise UnknownProvider(
            "The identity provider is not one of idporten, maskinporten, azuread (entra_id) or tokenx."
        )

    def by_issuer(self, issuer: str | None) -> Provider:
        """The provider a request that names none is routed to. Only providers that check the
        audience qualify: a Maskinporten token is valid for every consumer and API, so an app
        that did not ask for Maskinporten must never see one come back active."""
        for provider in self._by_name.values():
            if issuer is not None and provider.issuer == issuer:
                if provider.config.audience is None:
                    raise UnknownProvider(
                        f"Tokens of {provider.name} are introspected only when the request names it "
                        "as identity_provider, since they carry no audience to check."
                    )
                return provider
        raise UnknownProvider("No enabled identity provider has the token's issuer (iss).")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

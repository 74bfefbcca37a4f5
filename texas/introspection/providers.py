"""Providers: a configured identity provider with its resolved metadata and key set.

Explicit issuer and JWKS URI win over the discovery document; discovery is fetched when one of
them is missing, as part of the first key fetch (so an unreachable discovery document behaves
like an unreachable JWKS: the service starts, /readyz says 503, retries run in the background).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

import aiohttp
import orjson

from texas.config import ALIASES, PROVIDER_NAMES, Config, ProviderConfig
from texas.errors import JwksError, ProviderDisabled, UnknownProvider
from texas.introspection.jwks import JwksSettings, RemoteJwks, read_limited
from texas.introspection.validation import Policy
from texas.ops import telemetry

log = logging.getLogger(__name__)


class Provider:
    def __init__(
        self, config: ProviderConfig, session: aiohttp.ClientSession, settings: JwksSettings, leeway: float
    ) -> None:
        self.name = config.name
        self.config = config
        self._session = session
        self._leeway = leeway
        self.issuer: str | None = None
        self.jwks_uri: str | None = None
        self.policy: Policy | None = None
        if config.issuer and config.jwks_uri:
            self._resolve(config.issuer, config.jwks_uri)
        self.jwks = RemoteJwks(self.name, self.locate, session, settings)

    async def locate(self) -> str:
        """The JWKS URI, fetching the discovery document the first time it is needed."""
        if self.jwks_uri is None:
            assert self.config.well_known_url is not None  # guaranteed by ProviderConfig
            try:
                issuer, jwks_uri = await self._discover(self.config.well_known_url)
            except JwksError:
                telemetry.inc_discovery_fetch(self.name, "error")
                raise
            except aiohttp.ClientError as e:
                telemetry.inc_discovery_fetch(self.name, "error")
                raise JwksError(f"the discovery document could not be fetched ({type(e).__name__})") from None
            telemetry.inc_discovery_fetch(self.name, "ok")
            self._resolve(self.config.issuer or issuer, self.config.jwks_uri or jwks_uri)
        assert self.jwks_uri is not None
        return self.jwks_uri

    def _resolve(self, issuer: str, jwks_uri: str) -> None:
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
        if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme not in ("http", "https"):
            raise JwksError("the discovery document has no http(s) jwks_uri")
        return issuer, jwks_uri

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
        return cls({p.name: Provider(p, session, settings, config.leeway_seconds) for p in config.providers})

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

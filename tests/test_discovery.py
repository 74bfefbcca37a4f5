"""Discovery is not trusted blindly: https outside `texas dev` (loopback excepted), the issuer
checked against the well-known URL it came from, and the document read again on the refresh
schedule. Against the fake issuer on a real socket."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import introspect
from tests.support import Clock, FakeIssuer, claims_for, make_key, public_jwk, sign
from texas.config import Config, ProviderConfig
from texas.errors import ConfigError
from texas.introspection.jwks import JwksSettings
from texas.introspection.providers import Provider, issuer_matches

# --- https, at start-up ------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["IDPORTEN_WELL_KNOWN_URL", "IDPORTEN_JWKS_URI"])
@pytest.mark.parametrize(
    "url",
    ["http://idporten.example/x", "http://10.0.0.7/x", "http://[2001:db8::1]/x", "ftp://idporten.example/x"],
)
def test_plain_http_to_another_host_stops_start_up(tmp_path: Path, variable: str, url: str) -> None:
    env = {
        "IDPORTEN_ENABLED": "true",
        "IDPORTEN_AUDIENCE": "aud",
        "IDPORTEN_ISSUER": "https://idporten.example",
        "IDPORTEN_WELL_KNOWN_URL": "https://idporten.example/.well-known/openid-configuration",
        "IDPORTEN_JWKS_URI": "https://idporten.example/jwks",
        variable: url,
    }
    with pytest.raises(ConfigError) as info:
        Config.from_env(env, secrets_dir=tmp_path)
    assert variable in str(info.value) and "https" in str(info.value)
    # `texas dev` (and only it) may fetch over plain http from its own identity provider
    if url.startswith("http:"):
        assert Config.from_env(env, secrets_dir=tmp_path, insecure_http=True).insecure_http


@pytest.mark.parametrize(
    "url",
    [
        "https://idporten.example/jwks",
        "http://127.0.0.1:3001/idporten/jwks",
        "http://127.8.9.10/jwks",
        "http://[::1]:3001/jwks",
        "http://localhost:3001/jwks",
    ],
)
def test_https_or_loopback_is_accepted(tmp_path: Path, url: str) -> None:
    env = {
        "IDPORTEN_ENABLED": "true",
        "IDPORTEN_AUDIENCE": "aud",
        "IDPORTEN_ISSUER": "https://idporten.example",
        "IDPORTEN_JWKS_URI": url,
    }
    assert Config.from_env(env, secrets_dir=tmp_path).providers[0].jwks_uri == url


# --- the document ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issuer", "well_known", "matches"),
    [
        ("https://idporten.no", "https://idporten.no/.well-known/openid-configuration", True),
        ("https://maskinporten.no/", "https://maskinporten.no/.well-known/oauth-authorization-server", True),
        (
            "https://login.microsoftonline.com/t/v2.0",
            "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration",
            True,
        ),
        (
            "https://as.example/tenant",
            "https://as.example/.well-known/oauth-authorization-server/tenant",
            True,
        ),
        ("https://evil.example", "https://idporten.no/.well-known/openid-configuration", False),
        ("https://idporten.no/other", "https://idporten.no/.well-known/openid-configuration", False),
        ("https://idporten.no//", "https://idporten.no/.well-known/openid-configuration", False),
        ("http://idporten.no", "https://idporten.no/.well-known/openid-configuration", False),
        ("https://idporten.no", "https://idporten.no/.well-known/jwks.json", False),
    ],
    ids=[
        "openid",
        "maskinporten-trailing-slash",
        "issuer-with-path",
        "rfc8414-path-after-suffix",
        "another-host",
        "another-path",
        "two-slashes",
        "another-scheme",
        "another-suffix",
    ],
)
def test_issuer_must_be_the_well_known_urls(issuer: str, well_known: str, matches: bool) -> None:
    assert issuer_matches(issuer, well_known) is matches


async def test_a_document_naming_another_issuer_is_refused(
    make_texas: Any, issuer: FakeIssuer, token: Any
) -> None:
    # Whoever can serve a document at a well-known URL must not be able to name any issuer.
    issuer.state["idporten"].discovery = {"issuer": "https://idporten.example"}
    client = await make_texas(("idporten",), discovery=True)
    ready = await (await client.get("/readyz")).json()
    assert ready["status"] == "not_ready"
    assert "issuer" in ready["providers"]["idporten"]["error"]
    forged_iss = sign(claims_for("idporten", "https://idporten.example"), make_key("RS256", "key-1"))
    assert (await introspect(client, forged_iss))["reason"] == "keys_unavailable"


async def test_a_plain_http_jwks_uri_from_discovery_is_refused(
    make_texas: Any, issuer: FakeIssuer, token: Any
) -> None:
    issuer.state["idporten"].discovery = {"jwks_uri": "http://keys.example/jwks"}
    client = await make_texas(("idporten",), discovery=True)
    ready = await (await client.get("/readyz")).json()
    assert "https" in ready["providers"]["idporten"]["error"]
    assert (await introspect(client, token()))["reason"] == "keys_unavailable"


async def test_an_issuer_with_a_trailing_slash_is_accepted(make_texas: Any, issuer: FakeIssuer) -> None:
    # Maskinporten: https://maskinporten.no/ beside https://maskinporten.no/.well-known/...
    slashed = issuer.issuer("maskinporten") + "/"
    issuer.state["maskinporten"].discovery = {"issuer": slashed}
    client = await make_texas(("maskinporten",), discovery=True)
    t = sign(claims_for("maskinporten", slashed), make_key("RS256", "key-1"))
    assert (await introspect(client, t, "maskinporten"))["active"] is True


# --- read again on the refresh schedule ----------------------------------------------------------


def discovering(issuer: FakeIssuer, session: aiohttp.ClientSession, clock: Clock) -> Provider:
    config = ProviderConfig(name="idporten", audience="aud", well_known_url=issuer.well_known("idporten"))
    settings = JwksSettings(refresh=300, min_refresh=30, fetch_timeout=5, max_stale=86400)
    return Provider(config, session, settings, leeway=60, clock=clock)


async def test_discovery_is_read_again_on_the_refresh_schedule(
    issuer: FakeIssuer, session: aiohttp.ClientSession
) -> None:
    clock = Clock()
    provider = discovering(issuer, session, clock)
    state = issuer.state["idporten"]
    assert await provider.jwks.refresh("startup")
    assert state.discovery_fetches == 1

    # The provider moves its keys (here: to the tokenx path, which publishes another key).
    issuer.publish("tokenx", public_jwk(make_key("RS256", "moved"), "moved"))
    state.discovery = {"jwks_uri": issuer.jwks_uri("tokenx")}
    clock.now += 31
    assert await provider.jwks.refresh("unknown_kid")
    assert state.discovery_fetches == 1, "within the refresh interval the document held is used"

    clock.now += 300
    assert await provider.jwks.refresh("periodic")
    assert state.discovery_fetches == 2
    assert provider.jwks_uri == issuer.jwks_uri("tokenx")
    snapshot = provider.jwks.current()
    assert snapshot is not None and snapshot.has_kid("moved") and not snapshot.has_kid("key-1")


async def test_a_failed_reread_keeps_the_jwks_uri_held(
    issuer: FakeIssuer, session: aiohttp.ClientSession
) -> None:
    clock = Clock()
    provider = discovering(issuer, session, clock)
    assert await provider.jwks.refresh("startup")
    issuer.state["idporten"].discovery = {"issuer": "https://elsewhere.example"}
    clock.now += 301
    assert await provider.jwks.refresh("periodic"), "the keys still come from the URI held"
    assert provider.jwks_uri == issuer.jwks_uri("idporten")
    assert provider.issuer == issuer.issuer("idporten")
    assert issuer.state["idporten"].discovery_fetches == 2

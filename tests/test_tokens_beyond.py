"""Tokens beyond the original (issue 12), against the strict local authorization server
misbehaving on cue and counting its calls:

1. a dead user token of a known issuer is refused without a call out;
2. a machine token asked for inside its margin is served at once, with exactly one background
   renewal per key;
3. through an outage, a cached token with at least 30 s left is served (and counted);
4. connection errors, 5xx and 429 are retried with jittered backoff within the deadline.

Time moves on an injected clock (the cache's and the service's), never by sleeping.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.authserver import AuthServer, issuer
from tests.conftest import TexasFactory
from tests.support import Clock, claims_for, make_key, sign
from tests.test_tokens import ENTRA_SCOPE, GRANTS, SCOPE, TOKENX_TARGET, exchange, machine, sample
from texas.errors import IdentityProviderFailed
from texas.tokens.client import Retries, TokenClient
from texas.tokens.handler import TOKENS

__all__ = ["issuer"]  # the strict server replaces conftest's issuer in this module


async def start(make_texas: TexasFactory, server: AuthServer, timeout: str = "2", **env: str) -> TestClient:
    return await make_texas(**{"TEXAS_TOKEN_TIMEOUT_SECONDS": timeout, **server.environment(*GRANTS), **env})


def use_clock(texas: TestClient) -> Clock:
    """Put the token cache on a clock the test moves (the assertions keep real time: the
    strict server checks their exp against its own clock)."""
    clock = Clock(time.time())
    texas.server.app[TOKENS].cache.clock = clock
    return clock


def user_token(server: AuthServer, provider: str = "idporten", *, key: str = "key-1", **claims: Any) -> str:
    return sign(claims_for(provider, server.issuer(provider), **claims), make_key("RS256", key))


# --- 1. the user token is judged first ------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "claims", "key", "reason"),
    [
        ("idporten", {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "key-1", "expired"),
        ("idporten", {}, "attacker", "bad_signature"),
        ("idporten", {"aud": "someone-else"}, "key-1", "wrong_audience"),
        ("tokenx", {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "key-1", "expired"),
        ("azuread", {"nbf": int(time.time()) + 3600}, "key-1", "not_yet_valid"),
    ],
    ids=["expired", "forged", "wrong-audience", "expired-tokenx-token", "entra-not-yet-valid"],
)
async def test_a_dead_user_token_of_a_known_issuer_never_leaves_texas(
    make_texas: TexasFactory,
    issuer: AuthServer,
    provider: str,
    claims: dict[str, Any],
    key: str,
    reason: str,
) -> None:
    texas = await start(make_texas, issuer)
    dead = user_token(issuer, provider, key=key, **claims)
    for identity_provider, target in (("tokenx", TOKENX_TARGET), ("azuread", ENTRA_SCOPE)):
        body = await exchange(texas, 400, identity_provider=identity_provider, target=target, user_token=dead)
        assert body["error"] == "invalid_request"
        assert body["error_description"].startswith(f"The user token is not valid ({reason}): ")
    assert issuer.calls("tokenx") == issuer.calls("azuread") == 0
    assert issuer.subject_tokens == []


async def test_a_malformed_user_token_that_names_a_known_issuer_never_leaves_texas(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    broken = user_token(issuer) + "x"  # the signature is no longer canonical base64url
    body = await exchange(texas, 400, identity_provider="tokenx", target=TOKENX_TARGET, user_token=broken)
    assert body["error_description"].startswith("The user token is not valid (malformed): ")
    assert issuer.calls("tokenx") == 0


async def test_a_user_token_of_an_unknown_issuer_is_passed_on(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    stranger = sign(claims_for("idporten", "https://elsewhere.example"), make_key("RS256", "other"))
    broken_stranger = stranger + "x"
    for user in (stranger, "not-a-jwt", broken_stranger):
        await exchange(texas, identity_provider="tokenx", target=TOKENX_TARGET, user_token=user)
    assert issuer.subject_tokens == [stranger, "not-a-jwt", broken_stranger]


async def test_a_live_user_token_is_exchanged(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(make_texas, issuer)
    await exchange(texas, identity_provider="tokenx", target=TOKENX_TARGET, user_token=user_token(issuer))
    assert issuer.calls("tokenx") == 1


# --- 2. refresh ahead ------------------------------------------------------------------------------


async def test_a_hot_key_inside_its_margin_is_served_at_once_with_one_background_renewal(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer, timeout="30")
    clock = use_clock(texas)
    fields = {"identity_provider": "maskinporten", "target": SCOPE}
    first = await machine(texas, **fields)
    renewals = sample("texas_grant_refreshes_total", provider="maskinporten", result="ok")

    clock.now += 3500  # 100 s left: inside the 120 s margin
    endpoint = issuer.endpoints["maskinporten"]
    endpoint.script = ["hang"]  # the renewal waits until the test lets it go
    answers = await asyncio.gather(*(machine(texas, **fields) for _ in range(30)))
    # every caller was answered while the renewal was still held at the provider
    assert {a["access_token"] for a in answers} == {first["access_token"]}
    assert all(a["expires_in"] == 100 for a in answers)
    assert issuer.calls("maskinporten") == 2  # the first fetch and one renewal
    assert not endpoint.release.is_set()

    endpoint.release.set()
    async with asyncio.timeout(10):
        while sample("texas_grant_refreshes_total", provider="maskinporten", result="ok") < renewals + 1:
            await asyncio.sleep(0.01)
    renewed = await machine(texas, **fields)
    assert renewed["access_token"] == issuer.issued[1] != first["access_token"]
    assert issuer.calls("maskinporten") == 2
    assert issuer.violations == []


async def test_a_failed_renewal_keeps_the_token_and_the_next_request_tries_again(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    clock = use_clock(texas)
    fields = {"identity_provider": "azuread", "target": ENTRA_SCOPE}
    first = await machine(texas, **fields)
    clock.now += 3500
    issuer.endpoints["azuread"].script = ["refuse"]
    errors = sample("texas_grant_refreshes_total", provider="azuread", result="error")
    assert (await machine(texas, **fields))["access_token"] == first["access_token"]
    async with asyncio.timeout(10):
        while sample("texas_grant_refreshes_total", provider="azuread", result="error") < errors + 1:
            await asyncio.sleep(0.01)
    assert (await machine(texas, **fields))["access_token"] == first["access_token"]  # starts another
    async with asyncio.timeout(10):
        while len(issuer.issued) < 2:
            await asyncio.sleep(0.01)
    assert issuer.calls("azuread") == 3


async def test_past_the_renewal_window_the_caller_waits_for_a_fresh_token(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    clock = use_clock(texas)
    fields = {"identity_provider": "maskinporten", "target": SCOPE}
    await machine(texas, **fields)
    clock.now += 3575  # 25 s left: below the floor of 30 s
    assert (await machine(texas, **fields))["access_token"] == issuer.issued[1]


async def test_exchanged_tokens_are_not_renewed_ahead(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(make_texas, issuer)
    clock = use_clock(texas)
    user = user_token(issuer)
    fields = {"identity_provider": "tokenx", "target": TOKENX_TARGET, "user_token": user}
    await exchange(texas, **fields)
    clock.now += 3500
    assert (await exchange(texas, **fields))["access_token"] == issuer.issued[1]


# --- 3. outage tolerance -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["down", "reset", "hang"])
async def test_a_cached_token_is_served_through_an_outage(
    make_texas: TexasFactory, issuer: AuthServer, mode: str
) -> None:
    texas = await start(make_texas, issuer, timeout="1")
    clock = use_clock(texas)
    fields = {"identity_provider": "tokenx", "target": TOKENX_TARGET, "user_token": user_token(issuer)}
    first = await exchange(texas, **fields)
    stale = sample("texas_grant_stale_served_total", provider="tokenx")
    clock.now += 3500  # past the margin, 100 s left
    issuer.endpoints["tokenx"].mode = mode
    served = await exchange(texas, **fields)
    assert served == {**first, "expires_in": 100}
    assert sample("texas_grant_stale_served_total", provider="tokenx") == stale + 1
    assert issuer.calls("tokenx") >= 2


async def test_no_token_with_under_30_seconds_left_is_served_through_an_outage(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer, timeout="1")
    clock = use_clock(texas)
    fields = {"identity_provider": "tokenx", "target": TOKENX_TARGET, "user_token": user_token(issuer)}
    await exchange(texas, **fields)
    clock.now += 3571
    issuer.endpoints["tokenx"].mode = "down"
    body = await exchange(texas, 502, **fields)
    assert body["error"] == "server_error"


@pytest.mark.parametrize(("mode", "status"), [("garbage", 502), ("refuse", 400)])
async def test_nonsense_and_refusals_are_not_papered_over(
    make_texas: TexasFactory, issuer: AuthServer, mode: str, status: int
) -> None:
    texas = await start(make_texas, issuer)
    clock = use_clock(texas)
    fields = {
        "identity_provider": "azuread",
        "target": ENTRA_SCOPE,
        "user_token": user_token(issuer, "azuread"),
    }
    await exchange(texas, **fields)
    clock.now += 3500
    issuer.endpoints["azuread"].mode = mode
    await exchange(texas, status, **fields)


async def test_skip_cache_through_an_outage_serves_the_cached_token(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer, timeout="1")
    fields = {"identity_provider": "maskinporten", "target": SCOPE}
    first = await machine(texas, **fields)
    issuer.endpoints["maskinporten"].mode = "down"
    assert (await machine(texas, skip_cache=True, **fields))["access_token"] == first["access_token"]


# --- 4. retries within the deadline --------------------------------------------------------------


async def test_connection_errors_and_5xx_are_retried(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(make_texas, issuer, timeout="10")
    issuer.endpoints["maskinporten"].script = ["down", "reset"]
    retries = sample("texas_grant_retries_total", provider="maskinporten")
    body = await machine(texas, identity_provider="maskinporten", target=SCOPE)
    assert body["access_token"] == issuer.issued[0]
    assert issuer.calls("maskinporten") == 3
    assert sample("texas_grant_retries_total", provider="maskinporten") == retries + 2
    jtis = [c.claims["jti"] for c in issuer.endpoints["maskinporten"].calls if c.claims]
    assert len(jtis) == len(set(jtis)) == 3  # a fresh assertion for every attempt
    assert issuer.violations == []


async def test_a_refusal_is_not_retried(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(make_texas, issuer)
    issuer.endpoints["maskinporten"].script = ["refuse"]
    await machine(texas, 400, identity_provider="maskinporten", target=SCOPE)
    assert issuer.calls("maskinporten") == 1


async def test_a_provider_that_stays_down_costs_one_answer_within_the_deadline(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer, timeout="1")
    issuer.endpoints["azuread"].mode = "down"
    body = await machine(texas, 502, identity_provider="azuread", target=ENTRA_SCOPE)
    assert body["error_description"] == "The identity provider azuread answered HTTP 503."
    assert 2 <= issuer.calls("azuread") <= Retries().attempts


async def test_a_hanging_provider_is_answered_at_the_deadline(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer, timeout="1")
    issuer.endpoints["azuread"].mode = "hang"
    body = await machine(texas, 502, identity_provider="azuread", target=ENTRA_SCOPE)
    assert body["error_description"] == "The identity provider azuread did not answer within 1 s."
    assert issuer.calls("azuread") == 1


# The client alone, against the strict server, with the waits recorded instead of slept.


class Recorder:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


async def _client_request(server: AuthServer, client: TokenClient) -> Any:
    from tests.authserver import CLIENT_IDS, private_jwk
    from texas.tokens import grants
    from texas.tokens.assertion import parse_private_jwk

    key = parse_private_jwk("AZURE_APP_JWK", private_jwk("azuread"))
    who = grants.Client(CLIENT_IDS["azuread"], key, server.issuer("azuread"))
    return await client.request(
        "azuread",
        server.token_endpoint("azuread"),
        lambda: grants.client_credentials(who, "s", time.time()),
        client.deadline(),
    )


@pytest.mark.parametrize(
    ("header", "wait"),
    [("2", 2.0), ("0", 0.0), (None, 0.2), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", 0.2)],
    ids=["seconds", "zero", "absent", "http-date-past", "unreadable"],
)
async def test_429_waits_as_retry_after_says(issuer: AuthServer, header: str | None, wait: float) -> None:
    async with aiohttp.ClientSession() as session:
        recorder = Recorder()
        client = TokenClient(session, 10, sleep=recorder, draw=lambda: 1.0)
        issuer.endpoints["azuread"].script = ["throttle"]
        issuer.endpoints["azuread"].retry_after = header
        issued = await _client_request(issuer, client)
    assert issued.access_token == issuer.issued[0]
    assert recorder.waits == [pytest.approx(wait)]


async def test_a_retry_after_beyond_the_deadline_answers_at_once(issuer: AuthServer) -> None:
    async with aiohttp.ClientSession() as session:
        recorder = Recorder()
        client = TokenClient(session, 5, sleep=recorder)
        issuer.endpoints["azuread"].mode = "throttle"
        issuer.endpoints["azuread"].retry_after = "60"
        with pytest.raises(IdentityProviderFailed, match="answered HTTP 429"):
            await _client_request(issuer, client)
    assert recorder.waits == []
    assert issuer.calls("azuread") == 1


async def test_backoff_is_jittered_exponential_and_capped(issuer: AuthServer) -> None:
    async with aiohttp.ClientSession() as session:
        recorder = Recorder()
        client = TokenClient(session, 60, sleep=recorder, draw=lambda: 1.0)
        issuer.endpoints["azuread"].mode = "down"
        with pytest.raises(IdentityProviderFailed):
            await _client_request(issuer, client)
    assert recorder.waits == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert issuer.calls("azuread") == Retries().attempts
    assert [Retries(cap=0.5).backoff(n, 0.5) for n in (1, 2, 3)] == [0.1, 0.2, 0.25]

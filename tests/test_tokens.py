"""POST /api/v1/token and /api/v1/token/exchange (issue 11) against a strict local authorization
server (tests/authserver.py) that verifies every assertion and counts every call."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, unused_port
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client import REGISTRY

from tests.authserver import CLIENT_IDS, AuthServer, issuer, private_jwk
from tests.conftest import TexasFactory
from tests.support import b64, claims_for, make_key, sign
from texas.config import Config
from texas.errors import ConfigError

__all__ = ["issuer"]  # the strict server replaces conftest's issuer in this module

GRANTS = ("maskinporten", "azuread", "tokenx")
SCOPE = "nav:test/api"
ENTRA_SCOPE = "api://dev-gcp.team.other/.default"
TOKENX_TARGET = "dev-gcp:team:other"


async def start(make_texas: TexasFactory, server: AuthServer, **env: str) -> TestClient:
    return await make_texas(**{"TEXAS_TOKEN_TIMEOUT_SECONDS": "1", **server.environment(*GRANTS), **env})


async def post(client: TestClient, path: str, status: int = 200, **kwargs: Any) -> dict[str, Any]:
    response = await client.post(path, **kwargs)
    body = await response.json()
    assert response.status == status, body
    assert response.content_type == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    return body  # type: ignore[no-any-return]


async def machine(client: TestClient, status: int = 200, **fields: Any) -> dict[str, Any]:
    return await post(client, "/api/v1/token", status, json=fields)


async def exchange(client: TestClient, status: int = 200, **fields: Any) -> dict[str, Any]:
    return await post(client, "/api/v1/token/exchange", status, json=fields)


def user_token(server: AuthServer, provider: str = "idporten", **claims: Any) -> str:
    return sign(claims_for(provider, server.issuer(provider), **claims), make_key("RS256", "key-1"))


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- the four grants, as the strict server checks them --------------------------------------------


async def test_maskinporten_jwt_bearer_grant(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(make_texas, issuer)
    body = await machine(texas, identity_provider="maskinporten", target=SCOPE)
    assert body == {"access_token": issuer.issued[0], "token_type": "Bearer", "expires_in": 3600}
    (call,) = issuer.endpoints["maskinporten"].calls
    assert call.claims is not None
    assert call.claims["scope"] == SCOPE
    assert call.claims["aud"] == issuer.issuer("maskinporten")
    assert "resource" not in call.claims and "authorization_details" not in call.claims
    assert issuer.violations == []


async def test_maskinporten_resource_and_authorization_details_go_into_the_assertion(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    details = [{"type": "urn:altinn:systemuser", "systemuser_org": {"ID": "0192:889640782"}}]
    await machine(
        texas,
        identity_provider="maskinporten",
        target=SCOPE,
        resource="https://api.example/",
        authorization_details=details,
    )
    form = {
        "identity_provider": "maskinporten",
        "target": SCOPE,
        "resource": "https://api.example/",
        "authorization_details": json.dumps(details),
    }
    await post(texas, "/api/v1/token", data=form)  # the same key: from the cache
    await post(texas, "/api/v1/token", data={**form, "skip_cache": "true"})
    calls = issuer.endpoints["maskinporten"].calls
    assert len(calls) == 2
    for call in calls:
        assert call.claims is not None
        assert call.claims["resource"] == "https://api.example/"
        assert call.claims["authorization_details"] == details
    assert issuer.violations == []


async def test_entra_id_client_credentials_with_a_client_assertion(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    body = await machine(texas, identity_provider="entra_id", target=ENTRA_SCOPE)
    assert body["access_token"] == issuer.issued[0]
    (call,) = issuer.endpoints["azuread"].calls
    assert call.form["grant_type"] == "client_credentials"
    assert call.form["scope"] == ENTRA_SCOPE
    assert call.claims is not None and call.claims["sub"] == CLIENT_IDS["azuread"]
    assert issuer.violations == []


async def test_tokenx_token_exchange(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(make_texas, issuer)
    user = user_token(issuer)
    body = await exchange(texas, identity_provider="tokenx", target=TOKENX_TARGET, user_token=user)
    assert body["access_token"] == issuer.issued[0]
    (call,) = issuer.endpoints["tokenx"].calls
    assert call.form["subject_token"] == user
    assert call.form["audience"] == TOKENX_TARGET
    assert issuer.violations == []


async def test_entra_id_on_behalf_of(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(make_texas, issuer)
    user = user_token(issuer, "azuread")
    form = {"identity_provider": "azuread", "target": ENTRA_SCOPE, "user_token": user}
    body = await post(texas, "/api/v1/token/exchange", data=form)
    assert body["access_token"] == issuer.issued[0]
    (call,) = issuer.endpoints["azuread"].calls
    assert call.form["requested_token_use"] == "on_behalf_of"
    assert call.form["assertion"] == user
    assert call.form["scope"] == ENTRA_SCOPE
    assert issuer.violations == []


async def test_token_endpoint_from_discovery(make_texas: TexasFactory, issuer: AuthServer) -> None:
    env = issuer.environment(*GRANTS, endpoint=False)
    texas = await make_texas(discovery=True, **env)
    await machine(texas, identity_provider="maskinporten", target=SCOPE)
    await exchange(texas, identity_provider="tokenx", target=TOKENX_TARGET, user_token=user_token(issuer))
    assert issuer.calls("maskinporten") == issuer.calls("tokenx") == 1
    assert issuer.violations == []


async def test_discovery_read_once_even_with_explicit_issuer_and_jwks(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    env = issuer.environment("maskinporten", endpoint=False)
    texas = await make_texas(MASKINPORTEN_WELL_KNOWN_URL=issuer.well_known("maskinporten"), **env)
    fetches = issuer.state["maskinporten"].discovery_fetches
    await asyncio.gather(
        *(machine(texas, identity_provider="maskinporten", target=f"s{i}") for i in range(5))
    )
    assert issuer.state["maskinporten"].discovery_fetches == fetches + 1
    assert issuer.calls("maskinporten") == 5


# --- the cache ----------------------------------------------------------------------------------


async def test_an_identical_request_is_answered_from_the_cache(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    first = await machine(texas, identity_provider="maskinporten", target=SCOPE)
    again = await machine(texas, identity_provider="maskinporten", target=SCOPE)
    assert again["access_token"] == first["access_token"]
    assert again["expires_in"] <= first["expires_in"]
    await machine(texas, identity_provider="maskinporten", target="nav:test/other")
    await machine(texas, identity_provider="maskinporten", target=SCOPE, resource="https://x/")
    assert issuer.calls("maskinporten") == 3


async def test_exchanged_tokens_are_cached_per_user_token(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    alice, bob = user_token(issuer, pid="1"), user_token(issuer, pid="2")
    fields = {"identity_provider": "tokenx", "target": TOKENX_TARGET}
    a1 = await exchange(texas, user_token=alice, **fields)
    b1 = await exchange(texas, user_token=bob, **fields)
    a2 = await exchange(texas, user_token=alice, **fields)
    assert a1["access_token"] == a2["access_token"] != b1["access_token"]
    assert issuer.calls("tokenx") == 2


async def test_fifty_concurrent_identical_misses_make_one_call(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer, TEXAS_TOKEN_TIMEOUT_SECONDS="30")
    endpoint = issuer.endpoints["maskinporten"]
    endpoint.script = ["hang"]
    misses = sample("texas_grant_cache_lookups_total", endpoint="token", result="miss")
    requests = [
        asyncio.create_task(machine(texas, identity_provider="maskinporten", target=SCOPE)) for _ in range(50)
    ]
    async with asyncio.timeout(20):  # every request has missed and is waiting on the one call
        while sample("texas_grant_cache_lookups_total", endpoint="token", result="miss") < misses + 50:
            await asyncio.sleep(0.01)
    endpoint.release.set()
    answers = await asyncio.gather(*requests)
    assert issuer.calls("maskinporten") == 1
    assert {a["access_token"] for a in answers} == {issuer.issued[0]}


async def test_skip_cache_fetches_afresh_and_replaces_the_entry(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    fields = {"identity_provider": "maskinporten", "target": SCOPE}
    first = await machine(texas, **fields)
    fresh = await machine(texas, skip_cache=True, **fields)
    after = await machine(texas, **fields)
    assert first["access_token"] != fresh["access_token"] == after["access_token"]
    assert issuer.calls("maskinporten") == 2
    user = user_token(issuer)
    ex = {"identity_provider": "tokenx", "target": TOKENX_TARGET, "user_token": user}
    one = await exchange(texas, **ex)
    two = await post(texas, "/api/v1/token/exchange", data={**ex, "skip_cache": "true"})
    assert one["access_token"] != two["access_token"]
    assert issuer.calls("tokenx") == 2


async def test_errors_are_never_cached(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(make_texas, issuer)
    issuer.endpoints["maskinporten"].script = ["refuse", "garbage"]
    fields = {"identity_provider": "maskinporten", "target": SCOPE}
    await machine(texas, 400, **fields)
    await machine(texas, 502, **fields)
    body = await machine(texas, **fields)
    assert body["access_token"] == issuer.issued[0]
    assert issuer.calls("maskinporten") == 3


async def test_a_short_lived_token_is_cached_for_half_its_life(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    """expires_in 100 s: margin is 50 s, so it is served from the cache at once."""
    texas = await start(make_texas, issuer)
    issuer.endpoints["azuread"].expires_in = 100
    await machine(texas, identity_provider="azuread", target=ENTRA_SCOPE)
    second = await machine(texas, identity_provider="azuread", target=ENTRA_SCOPE)
    assert issuer.calls("azuread") == 1
    assert 0 < second["expires_in"] <= 100


# --- errors --------------------------------------------------------------------------------------


async def test_the_identity_providers_oauth_error_is_passed_on(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    issuer.endpoints["maskinporten"].script = ["refuse", "refuse_bare"]
    body = await machine(texas, 400, identity_provider="maskinporten", target=SCOPE)
    assert body == {
        "error": "invalid_scope",
        "error_description": "The scope is not allowed for this client.",
    }
    bare = await machine(texas, 401, identity_provider="maskinporten", target=SCOPE)
    assert bare["error"] == "unauthorized_client"
    assert "maskinporten" in bare["error_description"]


@pytest.mark.parametrize(
    ("mode", "sentence"),
    [
        ("garbage", "answered HTTP 200 with something that is not a token"),
        ("huge", "answered more than 256 KiB"),
        ("hang", "did not answer within 1 s"),
    ],
    ids=["garbage", "huge", "hang"],
)
async def test_nonsense_or_silence_is_a_502(
    make_texas: TexasFactory, issuer: AuthServer, mode: str, sentence: str
) -> None:
    texas = await start(make_texas, issuer)
    issuer.endpoints["tokenx"].mode = mode
    body = await exchange(
        texas, 502, identity_provider="tokenx", target=TOKENX_TARGET, user_token=user_token(issuer)
    )
    assert body["error"] == "server_error"
    assert "tokenx" in body["error_description"] and sentence in body["error_description"]


async def test_an_unreachable_provider_is_a_502(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(
        make_texas, issuer, MASKINPORTEN_TOKEN_ENDPOINT=f"http://127.0.0.1:{unused_port()}/token"
    )
    body = await machine(texas, 502, identity_provider="maskinporten", target=SCOPE)
    assert body["error"] == "server_error"
    assert body["error_description"].startswith("The identity provider maskinporten could not be reached")


async def test_a_5xx_is_a_502(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await start(make_texas, issuer)
    issuer.endpoints["azuread"].mode = "down"
    body = await machine(texas, 502, identity_provider="azuread", target=ENTRA_SCOPE)
    assert body == {
        "error": "server_error",
        "error_description": "The identity provider azuread answered HTTP 503.",
    }


@pytest.mark.parametrize(
    ("path", "request_kwargs", "sentence"),
    [
        ("/api/v1/token", {"json": {"target": SCOPE}}, "The request has no identity_provider."),
        ("/api/v1/token", {"json": {"identity_provider": "maskinporten"}}, "The request has no target."),
        (
            "/api/v1/token",
            {"json": {"identity_provider": "maskinporten", "target": 42}},
            "The request field target must be a string.",
        ),
        (
            "/api/v1/token",
            {"json": {"identity_provider": "okta", "target": SCOPE}},
            "The identity provider is not one of idporten, maskinporten, azuread (entra_id) or tokenx.",
        ),
        (
            "/api/v1/token",
            {"json": {"identity_provider": "idporten", "target": SCOPE}},
            "The identity provider idporten does not issue machine tokens; "
            "use maskinporten or azuread (entra_id).",
        ),
        (
            "/api/v1/token",
            {"json": {"identity_provider": "tokenx", "target": SCOPE}},
            "The identity provider tokenx does not issue machine tokens; "
            "use maskinporten or azuread (entra_id).",
        ),
        (
            "/api/v1/token/exchange",
            {"json": {"identity_provider": "maskinporten", "target": SCOPE, "user_token": "x"}},
            "The identity provider maskinporten does not issue tokens on behalf of a user; "
            "use tokenx or azuread (entra_id).",
        ),
        (
            "/api/v1/token/exchange",
            {"json": {"identity_provider": "tokenx", "target": TOKENX_TARGET}},
            "The request has no user_token.",
        ),
        (
            "/api/v1/token",
            {"json": {"identity_provider": "azuread", "target": SCOPE, "authorization_details": []}},
            "The field authorization_details is for maskinporten only.",
        ),
        (
            "/api/v1/token",
            {"json": {"identity_provider": "maskinporten", "target": SCOPE, "authorization_details": "[1]"}},
            "The request field authorization_details must be a JSON array of objects.",
        ),
        (
            "/api/v1/token",
            {"json": {"identity_provider": "maskinporten", "target": SCOPE, "skip_cache": "yes"}},
            "The request field skip_cache must be true or false.",
        ),
        ("/api/v1/token", {"data": b"{", "headers": {"Content-Type": "application/json"}}, None),
        ("/api/v1/token", {"data": b"[]", "headers": {"Content-Type": "application/json"}}, None),
        ("/api/v1/token", {"data": b"x", "headers": {"Content-Type": "text/plain"}}, None),
        (
            "/api/v1/token",
            {
                "data": "identity_provider=maskinporten&identity_provider=azuread&target=x",
                "headers": {"Content-Type": "application/x-www-form-urlencoded"},
            },
            "The request repeats the field identity_provider.",
        ),
        (
            "/api/v1/token",
            {
                "data": b'{"identity_provider":"maskinporten","target":"a","target":"b"}',
                "headers": {"Content-Type": "application/json"},
            },
            "The request repeats the field target.",
        ),
        (
            "/api/v1/token",
            {
                "data": b'{"identity_provider":"maskinporten","target":"a","target":"b",'
                + b'"x":'
                + b"[" * 1000
                + b"]" * 1000
                + b"}",
                "headers": {"Content-Type": "application/json"},
            },
            "The request body is not valid JSON.",
        ),
        (
            "/api/v1/token",
            {
                "data": gzip.compress(b" " * (2 * 1024 * 1024)),
                "headers": {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            },
            "The request body is larger than 1 MiB.",
        ),
        (
            "/api/v1/token",
            {
                "data": gzip.compress(b'{"identity_provider":"maskinporten","target":"a"}') + b"junk",
                "headers": {"Content-Type": "application/json", "Content-Encoding": "gzip"},
            },
            "The request body does not decode as its Content-Encoding says.",
        ),
    ],
    ids=[
        "no-provider",
        "no-target",
        "number-target",
        "unknown-provider",
        "idporten-machine",
        "tokenx-machine",
        "maskinporten-exchange",
        "no-user-token",
        "details-for-entra",
        "details-not-objects",
        "bad-skip-cache",
        "bad-json",
        "json-array",
        "text-plain",
        "repeated-form-field",
        "repeated-json-field",
        "repeated-field-behind-deep-nesting",
        "gzip-bomb",
        "gzip-trailing-data",
    ],
)
async def test_the_callers_mistakes_are_400_invalid_request(
    make_texas: TexasFactory,
    issuer: AuthServer,
    path: str,
    request_kwargs: dict[str, Any],
    sentence: str | None,
) -> None:
    texas = await start(make_texas, issuer)
    body = await post(texas, path, 400, **request_kwargs)
    assert body["error"] == "invalid_request"
    assert isinstance(body["error_description"], str) and body["error_description"].endswith(".")
    if sentence is not None:
        assert body["error_description"] == sentence
    assert sum(issuer.calls(p) for p in GRANTS) == 0


async def test_a_repeat_inside_a_member_texas_does_not_read_is_no_repeated_field(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    body = b'{"identity_provider":"maskinporten","target":"%s","extra":{"target":1,"target":2}}' % (
        SCOPE.encode()
    )
    answer = await post(texas, "/api/v1/token", 200, data=body, headers={"Content-Type": "application/json"})
    assert answer["token_type"] == "Bearer"


async def test_a_disabled_provider_is_400(make_texas: TexasFactory, issuer: AuthServer) -> None:
    texas = await make_texas(("idporten", "tokenx"), **issuer.environment("tokenx"))
    body = await machine(texas, 400, identity_provider="maskinporten", target=SCOPE)
    assert body["error_description"] == "The identity provider maskinporten is not enabled in this service."


@pytest.mark.parametrize(
    ("provider", "drop", "variable"),
    [
        ("maskinporten", "MASKINPORTEN_CLIENT_JWK", "MASKINPORTEN_CLIENT_JWK"),
        ("maskinporten", "MASKINPORTEN_CLIENT_ID", "MASKINPORTEN_CLIENT_ID"),
        ("tokenx", "TOKEN_X_PRIVATE_JWK", "TOKEN_X_PRIVATE_JWK"),
        ("azuread", "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT", "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT"),
    ],
    ids=["maskinporten-key", "maskinporten-client-id", "tokenx-key", "entra-endpoint"],
)
async def test_a_provider_without_grant_settings_still_introspects_and_names_the_variable(
    make_texas: TexasFactory, issuer: AuthServer, provider: str, drop: str, variable: str
) -> None:
    env = issuer.environment(*GRANTS)
    del env[drop]
    texas = await make_texas(**env)
    if provider == "tokenx":
        body = await exchange(
            texas, 400, identity_provider=provider, target="t", user_token=user_token(issuer)
        )
    else:
        body = await machine(texas, 400, identity_provider=provider, target="t")
    assert body["error"] == "invalid_request"
    assert variable in body["error_description"]
    token = user_token(issuer, provider)
    verdict = await (
        await texas.post("/api/v1/introspect", json={"identity_provider": provider, "token": token})
    ).json()
    assert verdict["active"] is True


async def test_metrics_count_requests_cache_and_upstream(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    ok = sample("texas_token_requests_total", endpoint="token", provider="maskinporten", outcome="ok")
    hits = sample("texas_grant_cache_lookups_total", endpoint="token", result="hit")
    upstream = sample("texas_grant_upstream_duration_seconds_count", provider="maskinporten", result="ok")
    await machine(texas, identity_provider="maskinporten", target="nav:metrics")
    await machine(texas, identity_provider="maskinporten", target="nav:metrics")
    assert (
        sample("texas_token_requests_total", endpoint="token", provider="maskinporten", outcome="ok")
        == ok + 2
    )
    assert sample("texas_grant_cache_lookups_total", endpoint="token", result="hit") == hits + 1
    assert (
        sample("texas_grant_upstream_duration_seconds_count", provider="maskinporten", result="ok")
        == upstream + 1
    )
    text = await (await texas.get("/metrics")).text()
    assert "texas_grant_cache_entries" in text


async def test_no_metric_label_comes_from_a_token_request(
    make_texas: TexasFactory, issuer: AuthServer
) -> None:
    texas = await start(make_texas, issuer)
    marker = "weird-provider-name"
    await machine(texas, 400, identity_provider=marker, target=marker)
    await exchange(texas, 400, identity_provider=marker, target=marker, user_token=marker)
    assert marker not in await (await texas.get("/metrics")).text()
    assert (
        sample("texas_token_requests_total", endpoint="token", provider="none", outcome="invalid_request")
        >= 1
    )


# --- secrets stay out of the logs ----------------------------------------------------------------


async def test_no_secret_reaches_the_logs_at_debug(
    make_texas: TexasFactory, issuer: AuthServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texas = await start(make_texas, issuer, LOG_LEVEL="DEBUG")
    user = user_token(issuer)
    await machine(texas, identity_provider="maskinporten", target=SCOPE)
    await machine(texas, identity_provider="azuread", target=ENTRA_SCOPE)
    await exchange(texas, identity_provider="tokenx", target=TOKENX_TARGET, user_token=user)
    await exchange(texas, identity_provider="azuread", target=ENTRA_SCOPE, user_token=user)
    issuer.endpoints["tokenx"].script = ["refuse", "garbage"]
    issuer.endpoints["tokenx"].mode = "down"
    for status in (400, 502, 502):
        await exchange(
            texas, status, identity_provider="tokenx", target="t2", user_token=user, skip_cache=True
        )
    assertions = [
        c.form.get("assertion") or c.form.get("client_assertion")
        for e in issuer.endpoints.values()
        for c in e.calls
    ]
    secrets = {user, *issuer.issued, *(a for a in assertions if a)}
    for p in GRANTS:
        jwk = json.loads(private_jwk(p))
        secrets |= {jwk["d"], private_jwk(p)}
    secrets |= {s.split(".")[1] for s in list(secrets) if s.count(".") == 2}  # payloads alone too
    text = caplog.text + "".join(
        r.getMessage() + (r.exc_text or "") + repr(r.__dict__) for r in caplog.records
    )
    assert len(caplog.records) > 5
    for secret in secrets:
        assert secret not in text


# --- start-up ------------------------------------------------------------------------------------


def _env(issuer_url: str, **extra: str) -> dict[str, str]:
    return {
        "MASKINPORTEN_ENABLED": "true",
        "MASKINPORTEN_ISSUER": issuer_url,
        "MASKINPORTEN_JWKS_URI": f"{issuer_url}/jwks",
        **extra,
    }


def _rsa_jwk(bits: int) -> dict[str, Any]:
    """A private RSA JWK of any size, built without joserfc (which warns on small keys)."""
    key = rsa.generate_private_key(65537, bits)
    numbers = key.private_numbers()
    public = numbers.public_numbers

    def b(value: int) -> str:
        return b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return {
        "kty": "RSA",
        "kid": "k",
        "n": b(public.n),
        "e": b(public.e),
        "d": b(numbers.d),
        "p": b(numbers.p),
        "q": b(numbers.q),
        "dp": b(numbers.dmp1),
        "dq": b(numbers.dmq1),
        "qi": b(numbers.iqmp),
    }


@pytest.mark.parametrize(
    ("value", "sentence"),
    [
        ("not json", "MASKINPORTEN_CLIENT_JWK is not valid JSON"),
        ("[1]", "MASKINPORTEN_CLIENT_JWK must be a private JWK"),
        (
            json.dumps({**json.loads(private_jwk("maskinporten")), "kid": None}),
            "MASKINPORTEN_CLIENT_JWK has no kid",
        ),
        (
            json.dumps(
                {
                    k: v
                    for k, v in json.loads(private_jwk("maskinporten")).items()
                    if k in ("kty", "n", "e", "kid")
                }
            ),
            "MASKINPORTEN_CLIENT_JWK holds a public key only",
        ),
        (json.dumps(_rsa_jwk(1024)), "MASKINPORTEN_CLIENT_JWK is an RSA key of 1024 bits"),
        (
            json.dumps({"kty": "oct", "k": "c2VjcmV0", "kid": "k"}),
            "MASKINPORTEN_CLIENT_JWK must be an RSA, EC or",
        ),
        (
            json.dumps({"kty": "RSA", "n": _rsa_jwk(2048)["n"], "d": "AQAB", "kid": "k"}),
            "MASKINPORTEN_CLIENT_JWK does not parse",
        ),
        (
            json.dumps({**json.loads(private_jwk("maskinporten")), "alg": "ES256"}),
            "MASKINPORTEN_CLIENT_JWK has alg 'ES256'",
        ),
    ],
    ids=["not-json", "not-object", "no-kid", "public-only", "rsa-1024", "symmetric", "broken", "wrong-alg"],
)
def test_a_bad_private_key_stops_start_up_naming_the_variable(value: str, sentence: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Config.from_env(_env("https://issuer.example", MASKINPORTEN_CLIENT_JWK=value))
    message = str(raised.value)
    assert message.startswith(sentence)
    assert "\n" not in message
    secret = json.loads(private_jwk("maskinporten"))["d"]
    assert secret not in message


def test_a_private_key_never_shows_in_the_configs_repr() -> None:
    config = Config.from_env(
        _env("https://issuer.example", MASKINPORTEN_CLIENT_JWK=private_jwk("maskinporten"))
    )
    provider = config.provider("maskinporten")
    assert provider is not None and provider.grant is not None and provider.grant.private_jwk is not None
    assert provider.grant.private_jwk.kid == "app-maskinporten-kid"
    assert json.loads(private_jwk("maskinporten"))["d"] not in repr(config)


def test_a_token_endpoint_must_be_a_url() -> None:
    with pytest.raises(ConfigError, match=r"^MASKINPORTEN_TOKEN_ENDPOINT must be an http"):
        Config.from_env(_env("https://issuer.example", MASKINPORTEN_TOKEN_ENDPOINT="ftp://x"))


def test_the_token_timeout_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"^TEXAS_TOKEN_TIMEOUT_SECONDS must be a positive"):
        Config.from_env(_env("https://issuer.example", TEXAS_TOKEN_TIMEOUT_SECONDS="0"))


def test_grant_settings_from_secret_files(tmp_path: Any) -> None:
    folder = tmp_path / "maskinporten"
    folder.mkdir()
    (folder / "MASKINPORTEN_CLIENT_JWK").write_text(private_jwk("maskinporten"))
    (folder / "MASKINPORTEN_CLIENT_ID").write_text("mp-client-1\n")
    config = Config.from_env(_env("https://issuer.example"), tmp_path)
    provider = config.provider("maskinporten")
    assert provider is not None and provider.grant is not None
    assert provider.grant.client_id == "mp-client-1"
    assert provider.grant.missing(discovery=False) == "MASKINPORTEN_TOKEN_ENDPOINT"

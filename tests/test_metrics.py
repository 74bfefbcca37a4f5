"""Metrics at /metrics, read through the service: every series of issue 4 is there and counts
what happened, and no label value ever comes from a request.

Counters are process-wide, so each test compares a scrape taken before with one taken after.
Multi-process sums (gunicorn) are checked in test_gunicorn.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TexasFactory, introspect
from tests.support import PROVIDERS, FakeIssuer, claims_for, make_key, public_jwk, sign
from texas.config import PROVIDER_NAMES
from texas.errors import REASONS
from texas.ops import telemetry

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

INTROSPECTIONS = "texas_introspections_total"
DURATION_COUNT = "texas_http_request_duration_seconds_count"
FETCHES = "texas_jwks_fetches_total"


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(client: TestClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await response.text())


def baseline() -> Samples:
    """What /metrics would say right now; for counters taken before a service starts."""
    return parse(telemetry.render().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def changes(before: Samples, after: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    """The series of `name` that moved between two scrapes, and by how much."""
    keys = {labels for n, labels in after if n == name}
    moved = {k: after[(name, k)] - before.get((name, k), 0.0) for k in keys}
    return {k: v for k, v in moved.items() if v}


def labels(**kv: str) -> frozenset[tuple[str, str]]:
    return frozenset(kv.items())


async def test_introspections_count_by_provider_and_outcome(
    texas: TestClient, issuer: FakeIssuer, token: Any
) -> None:
    forged = sign(claims_for("idporten", issuer.issuer("idporten")), make_key("RS256", "attacker"))
    stranger = sign(
        claims_for("idporten", issuer.issuer("idporten")), make_key("RS256", "key-9"), kid="key-9"
    )
    before = await scrape(texas)
    valid = token("idporten")
    for _ in range(3):  # the second and third come from the token cache: still counted
        assert (await introspect(texas, valid, "idporten"))["active"] is True
    assert (await introspect(texas, token("azuread"), "entra_id"))["active"] is True
    assert (await introspect(texas, token("maskinporten"), "maskinporten"))["active"] is True
    cases = [
        (token("idporten", exp=int(time.time()) - 3600), "idporten", "expired"),
        (forged, "idporten", "bad_signature"),
        (stranger, "idporten", "unknown_key"),
        ("not.a.token", "idporten", "malformed"),
        (token("tokenx", aud="someone-else"), "tokenx", "wrong_audience"),
        (token("idporten", acr="idporten-loa-substantial"), "idporten", "insufficient_level"),
    ]
    for tok, provider, reason in cases:
        extra = {"level": "idporten-loa-high"} if reason == "insufficient_level" else {}
        assert (await introspect(texas, tok, provider, **extra))["reason"] == reason
    assert (await introspect(texas, valid, "no-such-idp"))["reason"] == "unknown_provider"
    response = await texas.post("/api/v1/introspect", data=b"{", headers={"Content-Type": "application/json"})
    assert (await response.json())["reason"] == "bad_request"

    moved = changes(before, await scrape(texas), INTROSPECTIONS)
    assert moved == {
        labels(provider="idporten", outcome="active"): 3,
        labels(provider="azuread", outcome="active"): 1,
        labels(provider="maskinporten", outcome="active"): 1,
        labels(provider="idporten", outcome="expired"): 1,
        labels(provider="idporten", outcome="bad_signature"): 1,
        labels(provider="idporten", outcome="unknown_key"): 1,
        labels(provider="idporten", outcome="malformed"): 1,
        labels(provider="tokenx", outcome="wrong_audience"): 1,
        labels(provider="idporten", outcome="insufficient_level"): 1,
        labels(provider="none", outcome="unknown_provider"): 1,
        labels(provider="none", outcome="bad_request"): 1,
    }


async def test_a_disabled_provider_counts_under_none(make_texas: TexasFactory, token: Any) -> None:
    texas = await make_texas(("idporten",))
    before = await scrape(texas)
    assert (await introspect(texas, token("tokenx"), "tokenx"))["reason"] == "provider_disabled"
    assert changes(before, await scrape(texas), INTROSPECTIONS) == {
        labels(provider="none", outcome="provider_disabled"): 1
    }


async def test_request_latency_and_responses_by_route(texas: TestClient, token: Any) -> None:
    before = await scrape(texas)
    for _ in range(4):
        await introspect(texas, token(), "idporten")
    for path in ("/healthz", "/healthz", "/readyz", "/openapi.yaml", "/nope", "/api/v1/introspect"):
        await texas.get(path)  # the last: 405
    after = await scrape(texas)
    assert changes(before, after, DURATION_COUNT) == {
        labels(route="/api/v1/introspect"): 5,
        labels(route="/healthz"): 2,
        labels(route="/readyz"): 1,
        labels(route="/openapi.yaml"): 1,
        labels(route="other"): 1,
        labels(route="/metrics"): 1,  # the first scrape, seen by the second
    }
    inf = changes(before, after, "texas_http_request_duration_seconds_bucket")
    assert inf[labels(route="/api/v1/introspect", le="+Inf")] == 5
    assert (
        changes(before, after, "texas_http_request_duration_seconds_sum")[labels(route="/api/v1/introspect")]
        > 0
    )
    assert changes(before, after, "texas_http_responses_total") == {
        labels(route="/api/v1/introspect", code="200"): 4,
        labels(route="/api/v1/introspect", code="405"): 1,
        labels(route="/healthz", code="200"): 2,
        labels(route="/readyz", code="200"): 1,
        labels(route="/openapi.yaml", code="200"): 1,
        labels(route="other", code="404"): 1,
        labels(route="/metrics", code="200"): 1,
    }


async def test_jwks_fetches_by_provider_trigger_and_result(
    make_texas: TexasFactory, issuer: FakeIssuer, token: Any
) -> None:
    before = baseline()
    texas = await make_texas(discovery=True, TEXAS_JWKS_MIN_REFRESH_SECONDS="0.001")
    stranger = token("idporten", kid="key-2")
    # unknown kid: one fetch, answered 304 (the set has not changed)
    assert (await introspect(texas, stranger, "idporten"))["reason"] == "unknown_key"
    # the issuer rotates in key-2: the next unknown kid fetches it (200)
    issuer.publish(
        "idporten",
        public_jwk(make_key("RS256", "key-1"), "key-1"),
        public_jwk(make_key("RS256", "key-2"), "key-2"),
    )
    await asyncio.sleep(0.01)  # past the 1 ms in which key-2 is remembered as unknown
    assert (await introspect(texas, stranger, "idporten"))["active"] is True
    # the issuer is down: the fetch fails, and is counted as failed
    issuer.state["idporten"].mode = "down"
    assert (await introspect(texas, token("idporten", kid="key-3"), "idporten"))["reason"] == "unknown_key"

    after = await scrape(texas)
    expected = {labels(provider=p, trigger="startup", result="200"): 1 for p in PROVIDERS}
    expected |= {
        labels(provider="idporten", trigger="unknown_kid", result="304"): 1,
        labels(provider="idporten", trigger="unknown_kid", result="200"): 1,
        labels(provider="idporten", trigger="unknown_kid", result="error"): 1,
    }
    assert changes(before, after, FETCHES) == expected
    for p in PROVIDERS:  # every fetch the issuer saw is counted, and nothing else
        assert sum(v for k, v in expected.items() if ("provider", p) in k) == issuer.state[p].jwks_fetches
    assert changes(before, after, "texas_discovery_fetches_total") == {
        labels(provider=p, result="ok"): 1 for p in PROVIDERS
    }


async def test_keys_held_and_staleness_per_provider(make_texas: TexasFactory, issuer: FakeIssuer) -> None:
    issuer.publish(
        "azuread",
        public_jwk(make_key("RS256", "key-1"), "key-1"),
        public_jwk(make_key("ES256", "key-ec"), "key-ec"),
        public_jwk(make_key("EdDSA", "key-ed"), "key-ed"),
    )
    started = time.time()
    texas = await make_texas()
    after = await scrape(texas)
    for p in PROVIDERS:
        assert value(after, "texas_jwks_keys", provider=p) == (3 if p == "azuread" else 1)
        last = value(after, "texas_jwks_last_success_timestamp_seconds", provider=p)
        assert started - 1 <= last <= time.time()
        stale = value(after, telemetry.STALENESS_NAME, provider=p)
        assert 0 <= stale < 5


async def test_in_flight_requests(make_texas: TexasFactory, issuer: FakeIssuer, token: Any) -> None:
    """A request waiting on a JWKS fetch is in flight; so is the scrape that sees it."""
    texas = await make_texas(TEXAS_JWKS_MIN_REFRESH_SECONDS="0.001")
    assert value(await scrape(texas), "texas_http_requests_in_flight") == 1
    state = issuer.state["idporten"]
    state.mode, state.hang_seconds = "hang", 3.0  # long enough for a busy machine to scrape
    fetches = state.jwks_fetches
    slow = asyncio.create_task(introspect(texas, token("idporten", kid="key-slow"), "idporten"))
    while state.jwks_fetches == fetches:
        await asyncio.sleep(0.01)
    assert value(await scrape(texas), "texas_http_requests_in_flight") == 2
    assert (await slow)["reason"] == "unknown_key"
    assert value(await scrape(texas), "texas_http_requests_in_flight") == 1


async def test_token_cache_lookups_and_entries(texas: TestClient, issuer: FakeIssuer, token: Any) -> None:
    before = await scrape(texas)
    first, second = token("idporten"), token("idporten", jti="another")
    for tok in (first, first, second, first):
        assert (await introspect(texas, tok, "idporten"))["active"] is True
    forged = sign(claims_for("idporten", issuer.issuer("idporten")), make_key("RS256", "attacker"))
    assert (await introspect(texas, forged, "idporten"))["reason"] == "bad_signature"
    after = await scrape(texas)
    assert changes(before, after, "texas_token_cache_lookups_total") == {
        labels(result="miss"): 3,  # first, second, forged (which is then not stored)
        labels(result="hit"): 2,
    }
    assert value(after, "texas_token_cache_entries") == 2


BOUNDED: dict[str, frozenset[str]] = {
    "provider": frozenset(PROVIDER_NAMES) | {"none"},
    "outcome": frozenset(REASONS) | {"active", "ok", "invalid_request", "refused", "server_error"},
    "route": frozenset(
        {"/api/v1/introspect", "/api/v1/token", "/api/v1/token/exchange"}
        | {"/healthz", "/readyz", "/metrics", "/openapi.yaml", "other"}
    ),
    "trigger": frozenset({"startup", "periodic", "retry", "unknown_kid", "trailing"}),
    "result": frozenset({"200", "304", "error", "ok", "hit", "miss", "skip", "refused", "ahead"}),
    "endpoint": frozenset({"token", "exchange"}),
}


@pytest.mark.parametrize("field", ["identity_provider", "level"])
async def test_no_label_value_comes_from_a_request(make_texas: TexasFactory, token: Any, field: str) -> None:
    texas = await make_texas(TEXAS_JWKS_MIN_REFRESH_SECONDS="0.001")
    marker = f"weird-{uuid.uuid4().hex}"
    odd = f'{marker}"}} texas_evil{{x="1'
    fields = {"identity_provider": "idporten", "token": token(kid=marker), field: odd}
    await texas.post("/api/v1/introspect", json=fields)
    await texas.post(f"/api/v1/introspect?identity_provider={marker}", data={"token": marker})
    await texas.get(f"/{marker}", headers={"X-Request-Id": marker})
    await texas.request("PROPFIND", "/api/v1/introspect")
    response = await texas.get("/metrics")
    text = await response.text()
    assert marker not in text and "texas_evil" not in text
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("texas_"):
            continue
        for sample in family.samples:
            for name, label_value in sample.labels.items():
                if name == "le":
                    continue
                if name == "code":
                    assert label_value.isdigit() and len(label_value) == 3, sample
                else:
                    assert label_value in BOUNDED[name], sample


async def test_a_provider_without_keys_yet_shows_none_held_and_staleness_minus_one(
    make_texas: TexasFactory, issuer: FakeIssuer
) -> None:
    for gauge in (telemetry.JWKS_KEYS, telemetry.JWKS_LAST_SUCCESS):  # as in a new process
        with contextlib.suppress(KeyError):
            gauge.remove("tokenx")
    issuer.state["tokenx"].mode = "down"
    texas = await make_texas()
    after = await scrape(texas)
    assert after.get(("texas_jwks_keys", labels(provider="tokenx"))) == 0
    assert after.get((telemetry.STALENESS_NAME, labels(provider="tokenx"))) == -1
    assert value(after, "texas_jwks_keys", provider="idporten") == 1

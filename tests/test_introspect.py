"""The HTTP contract of POST /api/v1/introspect, against a real issuer on a real socket."""

from __future__ import annotations

import io
import json
from typing import Any

import orjson
import pytest

from tests.conftest import introspect
from tests.support import PROVIDERS, FakeIssuer, claims_for, make_key, sign

INACTIVE_KEYS = {"active", "error", "reason"}


def assert_inactive(answer: dict[str, Any], reason: str) -> None:
    assert answer["active"] is False
    assert answer["reason"] == reason, answer
    assert isinstance(answer["error"], str) and answer["error"].endswith(".")
    assert set(answer) - {"acr_values"} == INACTIVE_KEYS, "an inactive answer carries no claims"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_provider_accepts_its_tokens(texas, token, provider: str) -> None:
    answer = await introspect(texas, token(provider), provider)
    assert answer["active"] is True, answer
    assert answer["iss"].endswith(f"/{provider}")


async def test_entra_id_is_an_alias_of_azuread(texas, token) -> None:
    assert (await introspect(texas, token("azuread"), "entra_id"))["active"] is True


async def test_form_body_is_accepted(texas, token) -> None:
    response = await texas.post(
        "/api/v1/introspect", data={"identity_provider": "idporten", "token": token()}
    )
    assert (await response.json())["active"] is True


async def test_claims_come_back_verbatim(texas, issuer: FakeIssuer) -> None:
    c = claims_for("idporten", issuer.issuer("idporten"))
    payload = (
        f'{{"iss":"{c["iss"]}","aud":"{c["aud"]}","exp":{c["exp"]},"iat":{c["iat"]},'
        '"big":1180591620717411303424,"one":1.0,'
        '"name":"Bjørn Ærlig \\u00c5s","nested":{"a":[1,{"b":null}],"e":1e3},"error":"claim"}'
    ).encode()
    response = await texas.post(
        "/api/v1/introspect",
        json={"identity_provider": "idporten", "token": sign(payload, make_key("RS256", "key-1"))},
    )
    raw = await response.read()
    assert raw.startswith(b'{"active":true,')
    assert b"1180591620717411303424" in raw and b'"one":1.0' in raw and b'"e":1e3' in raw
    answer = json.loads(raw)
    assert answer["big"] == 2**70
    assert answer["name"] == "Bjørn Ærlig Ås"
    assert answer["nested"] == {"a": [1, {"b": None}], "e": 1000.0}
    assert answer["error"] == "claim"  # a claim, not a verdict: active stays true
    assert answer["active"] is True


@pytest.mark.parametrize("value", [False, "false", None, 0])
async def test_a_claim_named_active_never_overrides_the_verdict(texas, token, value: Any) -> None:
    response = await texas.post(
        "/api/v1/introspect", json={"identity_provider": "idporten", "token": token(active=value)}
    )
    raw = await response.read()
    assert raw.count(b'"active"') == 1
    assert json.loads(raw)["active"] is True


async def test_a_claim_named_active_leaves_big_integers_exact(texas, issuer: FakeIssuer) -> None:
    """The answer is re-encoded without the `active` claim; integers past 64 bits stay exact."""
    c = claims_for("idporten", issuer.issuer("idporten"))
    payload = orjson.dumps({**c, "active": False}).rstrip(b"}") + b',"big":1180591620717411303424}'
    response = await texas.post(
        "/api/v1/introspect",
        json={"identity_provider": "idporten", "token": sign(payload, make_key("RS256", "key-1"))},
    )
    raw = await response.read()
    assert b'"big":1180591620717411303424' in raw
    assert json.loads(raw)["active"] is True


async def test_forged_token_is_inactive_without_claims(texas, issuer: FakeIssuer) -> None:
    forged = sign(claims_for("idporten", issuer.issuer("idporten")), make_key("RS256", "attacker"))
    assert_inactive(await introspect(texas, forged), "bad_signature")


async def test_token_for_another_provider_is_wrong_issuer(texas, token) -> None:
    assert_inactive(await introspect(texas, token("tokenx"), "idporten"), "wrong_issuer")


async def test_maskinporten_does_not_check_audience(texas, token) -> None:
    assert (await introspect(texas, token("maskinporten", aud="anything"), "maskinporten"))["active"] is True


async def test_idporten_checks_audience(texas, token) -> None:
    assert_inactive(await introspect(texas, token(aud="someone-else")), "wrong_audience")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"identity_provider": "idporten"}, "bad_request"),
        ({"identity_provider": "idporten", "token": ""}, "bad_request"),
        ({"identity_provider": "idporten", "token": 7}, "bad_request"),
        ({"identity_provider": "IDPORTEN", "token": "x.y.z"}, "unknown_provider"),
        ({"identity_provider": "github", "token": "x.y.z"}, "unknown_provider"),
        ({"identity_provider": 3, "token": "x.y.z"}, "bad_request"),
        ({"identity_provider": "idporten", "token": "x.y.z", "level": "Level2"}, "bad_request"),
    ],
    ids=[
        "no-token",
        "empty-token",
        "token-not-string",
        "upper-case-provider",
        "unknown-provider",
        "provider-not-string",
        "unknown-level",
    ],
)
async def test_bad_requests_are_inactive(texas, fields: dict[str, Any], reason: str) -> None:
    response = await texas.post("/api/v1/introspect", json=fields)
    assert response.status == 200
    assert_inactive(await response.json(), reason)


async def test_disabled_provider_is_its_own_verdict(make_texas, token) -> None:
    client = await make_texas(("idporten",))
    assert_inactive(await introspect(client, token("tokenx"), "tokenx"), "provider_disabled")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"not json", "application/json"),
        (b"[1,2]", "application/json"),
        (b"{}", "text/plain"),
        (b"token=a&token=b", "application/x-www-form-urlencoded"),
        (b"\xff\xfe", "application/x-www-form-urlencoded"),
        (b"[" * 5000 + b"]" * 5000, "application/json"),
        (b"", "application/json"),
    ],
    ids=[
        "not-json",
        "json-array",
        "wrong-content-type",
        "repeated-form-field",
        "bad-utf8-form",
        "deep-json",
        "empty",
    ],
)
async def test_unreadable_bodies_are_inactive(texas, body: bytes, content_type: str) -> None:
    response = await texas.post("/api/v1/introspect", data=body, headers={"Content-Type": content_type})
    assert response.status == 200
    assert_inactive(await response.json(), "bad_request")


async def test_body_over_one_mebibyte_is_413_json_and_service_stays_healthy(texas) -> None:
    body = io.BytesIO(
        json.dumps({"identity_provider": "idporten", "token": "a" * (1024 * 1024 + 10)}).encode()
    )
    response = await texas.post("/api/v1/introspect", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 413
    assert_inactive(await response.json(), "bad_request")
    assert (await texas.get("/healthz")).status == 200


async def test_body_just_under_the_limit_gets_a_verdict(texas) -> None:
    body = io.BytesIO(
        json.dumps({"identity_provider": "idporten", "token": "a" * (1024 * 1024 - 100)}).encode()
    )
    response = await texas.post("/api/v1/introspect", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 200
    assert_inactive(await response.json(), "malformed")


# --- level and step-up ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("acr", "level", "active"),
    [
        ("idporten-loa-high", "idporten-loa-substantial", True),
        ("idporten-loa-high", "idporten-loa-high", True),
        ("idporten-loa-substantial", "idporten-loa-substantial", True),
        ("idporten-loa-substantial", "idporten-loa-high", False),
        ("Level4", "idporten-loa-high", True),
        ("Level3", "Level4", False),
        ("idporten-loa-substantial", "Level3", True),
        ("idporten-loa-low", "Level3", False),
        (None, "idporten-loa-substantial", False),
    ],
)
async def test_level(texas, token, acr: str | None, level: str, active: bool) -> None:
    t = token(acr=acr) if acr is not None else token(acr=...)
    answer = await introspect(texas, t, level=level)
    assert answer["active"] is active, answer
    if not active:
        assert_inactive(answer, "insufficient_level")
        expected = {"Level3": "idporten-loa-substantial", "Level4": "idporten-loa-high"}.get(level, level)
        assert answer["acr_values"] == expected


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{{"identity_provider": "idporten", "token": "{t}", "level": ""}}', "application/json"),
        ('{{"identity_provider": "idporten", "token": "{t}", "level": null}}', "application/json"),
        ("identity_provider=idporten&token={t}&level=", "application/x-www-form-urlencoded"),
    ],
    ids=["json-empty", "json-null", "form-empty"],
)
async def test_an_empty_level_is_a_bad_request_never_no_level(
    texas, token, body: str, content_type: str
) -> None:
    # A level from an unset variable must not switch the check off: this token has no acr.
    t = token(acr=...)
    response = await texas.post(
        "/api/v1/introspect", data=body.format(t=t).encode(), headers={"Content-Type": content_type}
    )
    answer = await response.json()
    assert_inactive(answer, "bad_request")
    assert "level" in answer["error"]
    assert (await introspect(texas, t))["active"] is True, "without the field, no level is asked"


async def test_level_is_checked_on_every_request_even_when_cached(texas, token) -> None:
    t = token(acr="idporten-loa-substantial")
    assert (await introspect(texas, t))["active"] is True
    assert (await introspect(texas, t, level="idporten-loa-high"))["active"] is False
    assert (await introspect(texas, t, level="idporten-loa-substantial"))["active"] is True


# --- issuer routing -----------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["idporten", "azuread", "tokenx"])
@pytest.mark.parametrize("absent", ["missing", None, ""])
async def test_without_identity_provider_the_issuer_picks_it(
    texas, token, provider: str, absent: Any
) -> None:
    fields = {} if absent == "missing" else {"identity_provider": absent}
    answer = await introspect(texas, token(provider), provider=None, **fields)
    assert answer["active"] is True, answer


@pytest.mark.parametrize("absent", ["missing", None, ""])
async def test_routing_never_picks_maskinporten(texas, token, absent: Any) -> None:
    # Maskinporten checks no audience: a token minted for another consumer and API would come
    # back active to an app that expected citizens. Named, it is introspected as before.
    fields = {} if absent == "missing" else {"identity_provider": absent}
    t = token("maskinporten")
    answer = await introspect(texas, t, provider=None, **fields)
    assert_inactive(answer, "unknown_provider")
    assert "maskinporten" in answer["error"]
    assert (await introspect(texas, t, provider="maskinporten"))["active"] is True


async def test_routing_by_issuer_still_verifies_everything(texas, issuer: FakeIssuer) -> None:
    forged = sign(claims_for("tokenx", issuer.issuer("tokenx")), make_key("RS256", "attacker"))
    assert_inactive(await introspect(texas, forged, provider=None), "bad_signature")


async def test_routing_with_an_unknown_issuer_is_unknown_provider(texas, token) -> None:
    assert_inactive(
        await introspect(texas, token(iss="https://elsewhere.example"), provider=None), "unknown_provider"
    )


async def test_routing_never_picks_a_disabled_provider(make_texas, token) -> None:
    client = await make_texas(("idporten",))
    assert_inactive(await introspect(client, token("tokenx"), provider=None), "unknown_provider")


async def test_routing_with_a_malformed_token_is_malformed(texas) -> None:
    assert_inactive(await introspect(texas, "not-a-jwt", provider=None), "malformed")


# --- probes ----------------------------------------------------------------------------------


async def test_healthz(texas) -> None:
    response = await texas.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz_reports_every_provider(texas) -> None:
    response = await texas.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ready"
    assert set(body["providers"]) == set(PROVIDERS)
    assert all(p["ready"] and p["keys"] == 1 for p in body["providers"].values())


async def test_openapi_document_is_served(texas) -> None:
    response = await texas.get("/openapi.yaml")
    assert response.status == 200
    assert response.content_type == "application/yaml"
    assert (await response.read()).startswith(b"openapi: 3.1")


async def test_metrics_count_verdicts(texas, token) -> None:
    await introspect(texas, token())
    await introspect(texas, token(aud="x"))
    text = await (await texas.get("/metrics")).text()
    assert 'texas_introspections_total{outcome="active",provider="idporten"}' in text
    assert 'texas_introspections_total{outcome="wrong_audience",provider="idporten"}' in text
    assert 'texas_jwks_staleness_seconds{provider="idporten"}' in text


async def test_unknown_path_is_404(texas) -> None:
    assert (await texas.get("/nope")).status == 404


@pytest.mark.parametrize(
    "body",
    [
        b'{"identity_provider": "idporten", "token": "a.b.c", "token": "x.y.z"}',
        b'{"identity_provider": "idporten", "token": "a.b.c", "\\u0074oken": "x.y.z"}',
        b'{"identity_provider": "idporten", "identity_provider": "tokenx", "token": "a.b.c"}',
    ],
    ids=["token-twice", "token-twice-escaped", "provider-twice"],
)
async def test_json_body_repeating_a_field_is_a_bad_request(texas, body: bytes) -> None:
    response = await texas.post("/api/v1/introspect", data=body, headers={"Content-Type": "application/json"})
    answer = await response.json()
    assert_inactive(answer, "bad_request")
    assert "repeats the field" in answer["error"]


async def test_escaped_names_that_do_not_repeat_are_fine(texas, token) -> None:
    body = b'{"identity_provider": "idporten", "\\u0074oken": "%s"}' % token().encode()
    response = await texas.post("/api/v1/introspect", data=body, headers={"Content-Type": "application/json"})
    assert (await response.json())["active"] is True

"""Contract fuzzing (issue 5, item 3): schemathesis drives the running service from openapi.yaml.

texas runs on a real port in a background thread (schemathesis calls it with `requests`,
synchronously), against the fake issuer for all four providers. Every operation gets the
schema's examples, coverage cases and ~50 generated requests, valid and invalid, each checked
for: no 5xx, a documented status code, the documented content type and headers, a body that
fits the response schema, and that schema-valid requests are accepted (2xx).

Not checked on purpose: `negative_data_rejection` (schema-invalid input must get a 4xx).
texas answers every introspection request with a 200 verdict by contract, so that check
contradicts the contract rather than testing it.

Fuzzed tokens are never genuine, so the active shape, the step-up shape, the 413 and the
not-ready 503 are checked below with hand-made requests through the same checks.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.authserver import AuthServer
from tests.support import PROVIDERS, claims_for, environment, make_key, public_jwk, sign
from texas.app import create_app
from texas.config import Config

ROOT = Path(__file__).resolve().parent.parent
Case = schemathesis.Case[Any]
SEED = 20250101
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "suppress-health-check": [HealthCheck.too_slow.name, HealthCheck.filter_too_much.name],
        "generation": {
            "mode": "all",
            "max-examples": 50,
            "deterministic": True,
            "database": "none",
        },
        "phases": {"stateful": {"enabled": False}},
    }
)
schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml", config=CONFIG)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    unsupported_method,
]


class LiveService:
    """texas and the fake issuer on real ports, served by an event loop in a thread."""

    def __init__(self, *, down: tuple[str, ...] = ()) -> None:
        self.down = down
        self.base_url = ""
        self.issuer = AuthServer()  # the fake issuer, with strict token endpoints
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="texas-live", daemon=True)

    def __enter__(self) -> LiveService:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError("texas did not start") from self._error
        return self

    def __exit__(self, *_: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as e:  # surfaced by __enter__
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        issuer_runner = web.AppRunner(self.issuer.app, access_log=None)
        await issuer_runner.setup()
        site = web.TCPSite(issuer_runner, "127.0.0.1", 0)
        await site.start()
        self.issuer.base_url = f"http://127.0.0.1:{issuer_runner.addresses[0][1]}"
        for provider in PROVIDERS:
            self.issuer.publish(provider, public_jwk(make_key("RS256", "key-1"), "key-1"))
            if provider in self.down:
                self.issuer.state[provider].mode = "down"
        grants = self.issuer.environment("maskinporten", "azuread", "tokenx")
        config = Config.from_env(
            environment(
                self.issuer, TEXAS_JWKS_FETCH_TIMEOUT_SECONDS="1", TEXAS_TOKEN_TIMEOUT_SECONDS="2", **grants
            )
        )
        runner = web.AppRunner(create_app(config), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            for endpoint in self.issuer.endpoints.values():
                endpoint.release.set()
            await runner.cleanup()
            await issuer_runner.cleanup()

    def token(self, provider: str = "idporten", **claims: Any) -> str:
        return sign(claims_for(provider, self.issuer.issuer(provider), **claims), make_key("RS256", "key-1"))


@pytest.fixture(scope="module")
def live() -> Iterator[LiveService]:
    with LiveService() as service:
        yield service


@schema.exclude(path="/openapi.yaml").parametrize()
def test_every_operation_keeps_the_contract(case: Case, live: LiveService) -> None:
    case.call_and_validate(base_url=live.base_url, checks=CHECKS)


@schema.include(path="/openapi.yaml").parametrize()
def test_openapi_document_answer(case: Case, live: LiveService) -> None:
    """Every check but the body's schema: see test_openapi_document_body_fits_its_schema."""
    case.call_and_validate(
        base_url=live.base_url, checks=[c for c in CHECKS if c is not response_schema_conformance]
    )


def test_openapi_document_body_fits_its_schema(live: LiveService) -> None:
    operation = schema["/openapi.yaml"]["GET"]
    response = operation.Case().call(base_url=live.base_url)
    operation.validate_response(response)


# --- shapes fuzzing cannot reach ---------------------------------------------------------------


def introspect_case(body: Any, media_type: str = "application/json") -> Case:
    return schema["/api/v1/introspect"]["POST"].Case(body=body, media_type=media_type)


HAND_MADE: dict[str, Callable[[LiveService], tuple[Case, int, bool | None]]] = {
    "active": lambda s: (
        introspect_case({"identity_provider": "idporten", "token": s.token()}),
        200,
        True,
    ),
    "active-form": lambda s: (
        introspect_case(
            {"identity_provider": "tokenx", "token": s.token("tokenx")},
            "application/x-www-form-urlencoded",
        ),
        200,
        True,
    ),
    "active-with-a-claim-named-active": lambda s: (
        introspect_case({"token": s.token("azuread", active=False, error="x")}),
        200,
        True,
    ),
    "step-up": lambda s: (
        introspect_case(
            {
                "identity_provider": "idporten",
                "level": "Level4",
                "token": s.token(acr="idporten-loa-substantial"),
            }
        ),
        200,
        False,
    ),
    "expired": lambda s: (
        introspect_case(
            {
                "identity_provider": "maskinporten",
                "token": s.token("maskinporten", exp=1, iat=0, nbf=0),
            }
        ),
        200,
        False,
    ),
}


@pytest.mark.parametrize("name", list(HAND_MADE))
def test_hand_made_requests_keep_the_contract(live: LiveService, name: str) -> None:
    case, status, active = HAND_MADE[name](live)
    response = case.call_and_validate(base_url=live.base_url, checks=CHECKS)
    assert response.status_code == status
    assert response.json()["active"] is active


def test_oversized_body_answer_keeps_the_contract(live: LiveService) -> None:
    body = json.dumps({"identity_provider": "idporten", "token": "a" * (1024 * 1024 + 1)}).encode()
    response = requests.post(
        f"{live.base_url}/api/v1/introspect",
        data=io.BytesIO(body),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    schema["/api/v1/introspect"]["POST"].validate_response(response)


def test_not_ready_answer_keeps_the_contract() -> None:
    with LiveService(down=("tokenx",)) as service:
        response = requests.get(f"{service.base_url}/readyz", timeout=10)
        assert response.status_code == 503
        assert response.json()["providers"]["tokenx"]["ready"] is False
        schema["/readyz"]["GET"].validate_response(response)


@pytest.mark.parametrize(
    ("path", "mode", "status"),
    [
        ("/api/v1/token", "refuse", 400),
        ("/api/v1/token", "refuse_bare", 401),
        ("/api/v1/token", "garbage", 502),
        ("/api/v1/token/exchange", "refuse_bare", 401),
        ("/api/v1/token/exchange", "down", 502),
    ],
    ids=["token-refused", "token-refused-401", "token-garbage", "exchange-refused-401", "exchange-down"],
)
def test_token_error_answers_keep_the_contract(live: LiveService, path: str, mode: str, status: int) -> None:
    """The identity provider's refusals and failures, which fuzzing against a healthy one never
    meets, answered in the documented shapes."""
    provider = "maskinporten" if path == "/api/v1/token" else "tokenx"
    body: dict[str, Any] = {"identity_provider": provider, "target": f"nav:{mode}:{path}"}
    if provider == "tokenx":
        body["user_token"] = "not-a-jwt-so-not-judged-by-texas"
    endpoint = live.issuer.endpoints[provider]
    endpoint.mode = mode
    try:
        case = schema[path]["POST"].Case(body=body, media_type="application/json")
        # a documented 502 is the point here, so not_a_server_error is left out with the rest
        checks = [c for c in CHECKS if c not in (positive_data_acceptance, not_a_server_error)]
        response = case.call_and_validate(base_url=live.base_url, checks=checks)
    finally:
        endpoint.mode = "ok"
    assert response.status_code == status

"""A fault inside texas is not the caller's mistake: its own reason, a log line with the
exception's type (never its message), and a counter an alert fires on.

The fault is injected where the app hands shared objects in (the verified-token cache, the
providers), never on the validation path."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.conftest import introspect
from texas.app import INTROSPECT_PATH, PROVIDERS
from texas.introspection.handler import INTROSPECTOR
from texas.ops import logs, telemetry
from texas.tokens.handler import EXCHANGE_PATH, TOKEN_PATH, TOKENS

SECRET = "eyJzZWNyZXQiOiJ0b2tlbiJ9"


class BrokenCache:
    """A cache whose every lookup fails, with a message that quotes its input."""

    def key(self, provider: str, token: str) -> bytes:
        raise RuntimeError(f"cannot digest {SECRET}")


class BrokenJwks:
    def current(self) -> None:
        raise RuntimeError(f"cannot read {SECRET}")


def internal_errors(route: str) -> float:
    return telemetry.INTERNAL_ERRORS.labels(route)._value.get()  # type: ignore[no-any-return]


def introspections(outcome: str) -> float:
    telemetry.flush()
    return telemetry.INTROSPECTIONS.labels("none", outcome)._value.get()  # type: ignore[no-any-return]


async def test_a_fault_in_introspection_is_internal_error_not_bad_request(
    texas: Any, token: Any, caplog: pytest.LogCaptureFixture
) -> None:
    texas.app[INTROSPECTOR].cache = BrokenCache()
    before, verdicts = internal_errors(INTROSPECT_PATH), introspections("internal_error")
    with caplog.at_level(logging.ERROR):
        answer = await introspect(texas, token())
    assert answer == {
        "active": False,
        "error": "The service failed to handle the request; this is a fault in texas.",
        "reason": "internal_error",
    }
    assert internal_errors(INTROSPECT_PATH) == before + 1
    assert introspections("internal_error") == verdicts + 1

    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "RuntimeError" in record.getMessage()
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        line = formatter.format(record)
        assert "RuntimeError" in line and SECRET not in line


async def test_a_fault_in_a_probe_is_a_500_and_counted(texas: Any) -> None:
    provider = next(iter(texas.app[PROVIDERS]))
    provider.jwks, held = BrokenJwks(), provider.jwks
    before = internal_errors("/readyz")
    try:
        response = await texas.get("/readyz")
    finally:
        provider.jwks = held
    assert response.status == 500
    assert await response.json() == {"status": "error"}
    assert internal_errors("/readyz") == before + 1


async def test_the_counter_is_exported_from_the_start(texas: Any) -> None:
    text = await (await texas.get("/metrics")).text()
    assert f'texas_internal_errors_total{{route="{INTROSPECT_PATH}"}}' in text


@pytest.mark.parametrize(("path", "method"), [(TOKEN_PATH, "machine"), (EXCHANGE_PATH, "exchange")])
async def test_a_fault_in_a_token_endpoint_is_a_502_counted_as_internal(
    texas: Any, path: str, method: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: object) -> None:
        raise RuntimeError(f"cannot read {SECRET}")

    monkeypatch.setattr(texas.app[TOKENS], method, broken)
    before = internal_errors(path)
    body = {"identity_provider": "tokenx", "target": "c:n:a", "user_token": SECRET}
    if method == "machine":
        body = {"identity_provider": "maskinporten", "target": "nav:test"}
    with caplog.at_level(logging.ERROR):
        response = await texas.post(path, json=body)
    assert response.status == 502
    assert await response.json() == {
        "error": "server_error",
        "error_description": "texas failed to handle the token request.",
    }
    assert internal_errors(path) == before + 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        line = formatter.format(record)
        assert "RuntimeError" in line and SECRET not in line

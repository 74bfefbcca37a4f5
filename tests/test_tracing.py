"""Optional tracing (issue 4 item 6): with OTEL_EXPORTER_OTLP_ENDPOINT and the `otel` extra, a
span per request carrying the provider and the outcome, never the token or a claim; without
them, nothing is added to the app at all.

The span tests need the OpenTelemetry SDK (`pip install -e '.[otel]'`) and are skipped
without it; the zero-cost tests run everywhere.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
from aiohttp import web

from tests.conftest import introspect
from tests.support import FakeIssuer, claims_for, environment, make_key, sign
from texas.app import create_app
from texas.config import Config
from texas.ops import tracing

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def config(issuer: FakeIssuer, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.delenv(tracing.ENDPOINT_VARIABLE, raising=False)
    return Config.from_env(environment(issuer))


def test_without_the_endpoint_no_tracing_middleware(config: Config) -> None:
    app = create_app(config)
    assert list(app.middlewares) == []
    assert len(app.cleanup_ctx) == len(create_app(config).cleanup_ctx)
    assert tracing.install(app, {}) is False
    assert list(app.middlewares) == []


def test_the_endpoint_without_opentelemetry_adds_nothing_and_says_so(
    config: Config, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in [m for m in sys.modules if m == "opentelemetry" or m.startswith("opentelemetry.")]:
        monkeypatch.setitem(sys.modules, name, None)
    for name in ("opentelemetry", "opentelemetry.trace", "opentelemetry.propagate"):
        monkeypatch.setitem(sys.modules, name, None)  # as if the extra were not installed
    monkeypatch.setenv(tracing.ENDPOINT_VARIABLE, "http://127.0.0.1:4318")
    with caplog.at_level(logging.WARNING, logger="texas.ops.tracing"):
        app = create_app(config)
    assert list(app.middlewares) == []
    assert "pip install 'texas[otel]'" in caplog.text


@pytest.fixture
def spans(config: Config) -> Any:
    """An SDK tracer provider whose spans are kept in memory, and its exporter."""
    pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra is not installed")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_a_span_per_request_with_provider_and_outcome(
    config: Config, spans: Any, aiohttp_client: Any, issuer: FakeIssuer
) -> None:
    from opentelemetry.trace import SpanKind

    provider, exporter = spans
    app = create_app(config)
    assert tracing.install(app, tracer_provider=provider) is True
    client = await aiohttp_client(app)

    claims = claims_for("idporten", issuer.issuer("idporten"), pid="29017612345")
    token = sign(claims, make_key("RS256", "key-1"))
    forged = sign(claims, make_key("RS256", "attacker"))
    assert (await introspect(client, token, "idporten"))["active"] is True
    assert (await introspect(client, forged, "idporten"))["reason"] == "bad_signature"
    assert (await introspect(client, token, "keycloak"))["reason"] == "unknown_provider"
    response = await client.post(
        "/api/v1/introspect",
        data=b"{",
        headers={"Content-Type": "application/json", "traceparent": TRACEPARENT},
    )
    assert (await response.json())["reason"] == "bad_request"
    assert (await client.get("/healthz")).status == 200  # probes are not traced
    assert (await client.get("/metrics")).status == 200
    assert (await client.get("/nope")).status == 404

    finished = exporter.get_finished_spans()
    got = [
        (
            s.name,
            s.attributes.get("texas.provider"),
            s.attributes.get("texas.outcome"),
            s.attributes["http.response.status_code"],
        )
        for s in finished
    ]
    assert got == [
        ("POST /api/v1/introspect", "idporten", "active", 200),
        ("POST /api/v1/introspect", "idporten", "bad_signature", 200),
        ("POST /api/v1/introspect", "none", "unknown_provider", 200),
        ("POST /api/v1/introspect", "none", "bad_request", 200),
        ("GET other", None, None, 404),
    ]
    assert all(s.kind == SpanKind.SERVER for s in finished)
    assert finished[0].attributes["http.route"] == "/api/v1/introspect"
    assert finished[0].attributes["http.request.method"] == "POST"
    # the caller's trace context is honoured
    assert f"{finished[3].context.trace_id:032x}" == TRACEPARENT.split("-")[1]
    assert f"{finished[3].parent.span_id:016x}" == TRACEPARENT.split("-")[2]
    # never the token, a segment of it, or a claim value
    secrets = {
        token,
        *token.split("."),
        *(v for k, v in claims.items() if isinstance(v, str) and k not in ("iss", "aud")),
    }
    for span in finished:
        for value in span.attributes.values():
            assert not any(secret in str(value) for secret in secrets), span.attributes
        assert not span.events, "no exception events, which could quote a message"


async def test_the_endpoint_sends_spans_to_an_otlp_collector(
    config: Config,
    monkeypatch: pytest.MonkeyPatch,
    aiohttp_client: Any,
    aiohttp_server: Any,
    issuer: FakeIssuer,
) -> None:
    """The whole path as deployed: the variable turns tracing on in create_app, and spans reach
    a collector over OTLP/HTTP (a local server decoding the protobuf) when the app stops."""
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http", reason="the otel extra is not installed")
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    received: list[Any] = []

    async def collect(request: web.Request) -> web.Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        received.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    collector = web.Application()
    collector.router.add_post("/v1/traces", collect)
    server = await aiohttp_server(collector)
    monkeypatch.setenv(tracing.ENDPOINT_VARIABLE, str(server.make_url("")).rstrip("/"))
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)

    app = create_app(config)
    assert len(app.middlewares) == 1
    client = await aiohttp_client(app)
    token = sign(claims_for("tokenx", issuer.issuer("tokenx")), make_key("RS256", "key-1"))
    assert (await introspect(client, token, "tokenx"))["active"] is True
    await client.close()  # the app's clean-up flushes the queued spans

    spans = [
        (resource.resource, span)
        for message in received
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    assert len(spans) == 1
    resource, span = spans[0]
    attributes = {a.key: a.value.string_value or a.value.int_value for a in span.attributes}
    assert attributes["texas.provider"] == "tokenx" and attributes["texas.outcome"] == "active"
    service = {a.key: a.value.string_value for a in resource.attributes}["service.name"]
    assert service == "texas"

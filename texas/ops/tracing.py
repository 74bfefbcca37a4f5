"""Optional tracing with OpenTelemetry: one span per request, with the provider and outcome.

Tracing is on only when OTEL_EXPORTER_OTLP_ENDPOINT is set and the `otel` extra is installed
(`pip install 'texas[otel]'`); otherwise `install` leaves the app as it was: no middleware, no
import, no cost. Spans go to the OTLP/HTTP exporter, which reads the standard OTEL_* variables
(endpoint, headers, timeout); OTEL_SERVICE_NAME defaults to "texas". An incoming W3C
`traceparent` makes the span a child of the caller's.

A span carries the method, the route (a registered path or "other"), the status code and, for
introspection, `texas.provider` and `texas.outcome` (`active` or the reason code): the same
bounded values as the metrics, never the token, a claim or an error message. Probes and
/metrics are not traced: the kubelet and Prometheus would drown the traces that matter.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from texas.errors import REASONS
from texas.introspection.handler import INTROSPECTOR, Introspector, IntrospectRequest, Verdict
from texas.ops import logs

log = logging.getLogger(__name__)

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
INTROSPECT_PATH = "/api/v1/introspect"
UNTRACED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


@dataclass
class _Decision:
    """What the introspector decided for the request being traced."""

    provider: str = "none"
    outcome: str | None = None


_decision: ContextVar[_Decision | None] = ContextVar("texas_trace_decision", default=None)


class _RecordingIntrospector:
    """Passes requests to the real introspector and notes its verdict for the span."""

    def __init__(self, inner: Introspector) -> None:
        self._inner = inner

    async def __call__(self, request: IntrospectRequest) -> Verdict:
        verdict = await self._inner(request)
        decision = _decision.get()
        if decision is not None:
            decision.provider, decision.outcome = verdict.provider, verdict.outcome
        return verdict

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _Tracing:
    """The tracer of one app, set up at start-up and flushed at clean-up."""

    def __init__(self, tracer_provider: Any | None) -> None:
        self._given = tracer_provider
        self.tracer: Any = None

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        from texas import __version__

        provider = self._given if self._given is not None else _provider_from_env()
        self.tracer = provider.get_tracer("texas", __version__)
        app[INTROSPECTOR] = cast(Introspector, _RecordingIntrospector(app[INTROSPECTOR]))
        try:
            yield
        finally:
            self.tracer = None
            if self._given is None:  # ours: flush the spans still queued
                await asyncio.to_thread(provider.shutdown)

    def middleware(self) -> Any:
        from opentelemetry import propagate, trace

        @web.middleware
        async def trace_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            tracer = self.tracer
            if tracer is None or request.path in UNTRACED_PATHS:
                return await handler(request)
            route = logs.logged_path(request)
            method = logs.logged_method(request.method)
            decision = _Decision()
            reset = _decision.set(decision)
            try:
                with tracer.start_as_current_span(
                    f"{method} {route}",
                    context=propagate.extract(request.headers),
                    kind=trace.SpanKind.SERVER,
                    attributes={"http.request.method": method, "http.route": route},
                    record_exception=False,  # an exception's message may quote the request
                    set_status_on_exception=False,
                ) as span:
                    try:
                        response = await handler(request)
                    except web.HTTPException as e:
                        span.set_attribute("http.response.status_code", e.status)
                        raise
                    except BaseException as e:
                        span.set_status(trace.Status(trace.StatusCode.ERROR, type(e).__name__))
                        raise
                    span.set_attribute("http.response.status_code", response.status)
                    if response.status >= 500:
                        span.set_status(trace.Status(trace.StatusCode.ERROR))
                    if route == INTROSPECT_PATH:
                        outcome = decision.outcome or _reason(response)
                        span.set_attribute("texas.provider", decision.provider)
                        span.set_attribute("texas.outcome", outcome)
                    return response
            finally:
                _decision.reset(reset)

        return trace_request


_EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def install(
    app: web.Application,
    environ: Mapping[str, str] | None = None,
    *,
    tracer_provider: Any | None = None,
) -> bool:
    """Trace the app's requests when OTEL_EXPORTER_OTLP_ENDPOINT is set and OpenTelemetry is
    installed, or with `tracer_provider` (an SDK TracerProvider, for tests); True if it does."""
    environ = os.environ if environ is None else environ
    if tracer_provider is None and not environ.get(ENDPOINT_VARIABLE):
        return False
    modules = ["opentelemetry.trace", "opentelemetry.propagate"]
    if tracer_provider is None:
        modules += ["opentelemetry.sdk.trace", _EXPORTER]
    try:
        for name in modules:
            importlib.import_module(name)
    except ImportError:
        log.warning(
            "%s is set but OpenTelemetry is not installed (pip install 'texas[otel]'): "
            "requests are not traced",
            ENDPOINT_VARIABLE,
        )
        return False
    tracing = _Tracing(tracer_provider)
    app.middlewares.append(tracing.middleware())
    app.cleanup_ctx.append(tracing.lifecycle)
    return True


def _provider_from_env() -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "texas"}))
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _reason(response: web.StreamResponse) -> str:
    """The reason code of an answer the introspector did not give (an unreadable request)."""
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes):
        try:
            reason = orjson.loads(body).get("reason")
        except (orjson.JSONDecodeError, AttributeError):
            reason = None
        if reason in REASONS:
            return cast(str, reason)
    return "error"

"""GET /healthz, /readyz, /metrics, and the contract at /openapi.yaml."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from importlib import resources

import orjson
from aiohttp import web

from texas.introspection.providers import Providers
from texas.ops import telemetry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PROVIDERS = web.AppKey("providers", Providers)
DEV_MODE = web.AppKey("dev_mode", bool)

_HEALTHY = orjson.dumps({"status": "ok"})


@functools.cache
def openapi_document() -> bytes:
    """The contract file at the repository root (packaged as texas/openapi.yaml)."""
    return resources.files("texas").joinpath("openapi.yaml").read_bytes()


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=_HEALTHY, content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    providers = request.app[PROVIDERS]
    states = {p.name: p.readiness() for p in providers}
    waiting = [name for name, state in states.items() if not state["ready"]]
    body: dict[str, object] = {"status": "not_ready" if waiting else "ready"}
    if request.app[DEV_MODE]:
        body["mode"] = "dev"
    if waiting:
        body["reason"] = f"Providers without signing keys: {', '.join(waiting)}."
    body["providers"] = states
    return web.Response(
        body=orjson.dumps(body), status=503 if waiting else 200, content_type="application/json"
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=telemetry.render(), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=openapi_document(), content_type="application/yaml")


def add_routes(app: web.Application, route: Callable[[web.Application, str, str, Handler], None]) -> None:
    """Probes and metrics: on the API address, and alone on PROBE_BIND_ADDRESS."""
    for path, handler in (("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics)):
        route(app, "GET", path, handler)

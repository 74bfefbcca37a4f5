"""How every Python target of the benchmark is run, so they differ only in their handler.

Each target reads BIND_ADDRESS like texas does, uses uvloop when it is installed (texas does
too, so the loop is not what the ratios measure) and writes no access log.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def routes(app: web.Application, introspect: Handler, ready: Handler) -> web.Application:
    """The paths the harness calls: the introspection endpoint and the two probes."""
    app.router.add_post("/api/v1/introspect", introspect)
    app.router.add_get("/readyz", ready)
    app.router.add_get("/healthz", ready)
    return app


def bind_address() -> tuple[str, int]:
    """host and port from BIND_ADDRESS (default 127.0.0.1:3000, as texas)."""
    host, _, port = os.environ.get("BIND_ADDRESS", "127.0.0.1:3000").rpartition(":")
    return host or "127.0.0.1", int(port)


def run(factory: Callable[[], Awaitable[web.Application]]) -> None:
    """Serve the app built by `factory` on BIND_ADDRESS until SIGTERM or SIGINT."""
    try:
        import uvloop
    except ImportError:
        loop = asyncio.new_event_loop()
    else:
        loop = uvloop.new_event_loop()
    host, port = bind_address()
    web.run_app(factory(), host=host, port=port, access_log=None, print=None, loop=loop)

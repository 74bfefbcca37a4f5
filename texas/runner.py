"""The runner: listeners that close first on shutdown, then a short drain.

aiohttp's own shutdown closes idle keep-alive connections at once, and a client that wrote a
request on one a moment earlier sees the connection drop. So after the listeners close, texas
keeps existing connections open for up to DRAIN_SECONDS, answers what arrives on them with
`Connection: close` (clients move off them), and only then runs aiohttp's shutdown, which waits
for every request in flight. Used by `texas serve` and, through `create_app_from_env`, by
gunicorn's aiohttp worker.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass

from aiohttp import web

from texas.ops import logs

DRAIN_SECONDS = 2.0
# texas decodes request bodies itself (introspect.py): aiohttp's parser would answer an
# encoding it cannot decode with a plain-text 400 before texas could give its verdict.
SERVER_OPTIONS: dict[str, object] = {"auto_decompress": False}
SHUTDOWN_TIMEOUT = 20.0  # below gunicorn's graceful_timeout (deploy/) and Kubernetes' 30 s


@dataclass
class Lifecycle:
    draining: bool = False


LIFECYCLE = web.AppKey("lifecycle", Lifecycle)


class DrainingRunner(web.AppRunner):
    def __init__(
        self,
        app: web.Application,
        *,
        access_log: bool = False,
        drain_seconds: float = DRAIN_SECONDS,
        **kwargs: object,
    ) -> None:
        # Off, aiohttp skips the access logger entirely: a JSON line and a write per request
        # cost about as much as the rest of a cached verdict (see bench/README.md).
        kwargs.setdefault("access_log_class", logs.AccessLogger)
        kwargs.setdefault("access_log", logs.ACCESS_LOGGER if access_log else None)
        kwargs.setdefault("shutdown_timeout", SHUTDOWN_TIMEOUT)
        for name, value in SERVER_OPTIONS.items():
            kwargs.setdefault(name, value)
        super().__init__(app, **kwargs)  # type: ignore[arg-type]
        self._drain_seconds = drain_seconds

    async def setup(self) -> None:
        await super().setup()
        # Everything made at start-up (modules, keys, the app) lives as long as the process:
        # freezing it keeps the collector from walking it again on every full collection,
        # which otherwise shows as 10 ms pauses at p99 under new-token load.
        gc.freeze()

    async def cleanup(self) -> None:
        lifecycle = self.app.get(LIFECYCLE)
        if lifecycle is not None:
            lifecycle.draining = True
        for site in list(self.sites):
            await site.stop()
        server = self.server
        if server is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._drain_seconds
            while server.connections and loop.time() < deadline:
                await asyncio.sleep(0.05)
        await super().cleanup()

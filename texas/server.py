"""Running the service in one process: listeners, signals and graceful shutdown.

On SIGTERM (or SIGINT) the listeners close first, then every request already received is
answered (see runner.py), then the process exits 0. Under gunicorn, aiohttp's worker runs the
same runner.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

from aiohttp import web

from texas.app import create_app
from texas.config import Config
from texas.runner import DrainingRunner

log = logging.getLogger(__name__)
T = TypeVar("T")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (it is a dependency on Linux), else asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


async def serve(config: Config, *, dev: bool = False, stop: asyncio.Event | None = None) -> None:
    """Serve until a signal arrives or `stop` is set."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    runner = DrainingRunner(create_app(config, dev=dev), access_log=config.access_log, handle_signals=False)
    await runner.setup()
    try:
        address = config.bind_address
        await web.TCPSite(runner, address.host, address.port, reuse_address=True).start()
        if dev:
            log.warning(
                "DEVELOPMENT MODE: tokens come from the embedded dev identity provider; "
                "never run `texas dev` in production"
            )
        log.info("texas listening on http://%s", address)
        await stop.wait()
        log.info("shutting down: no new connections; answering requests in flight")
    finally:
        await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("texas stopped")

"""Running the service in one process: listeners, signals and graceful shutdown.

On SIGTERM (or SIGINT) the listeners close first, then every request already received is
answered, then the process exits 0. Under gunicorn, aiohttp's worker does the same.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from . import logs
from .app import create_app, create_probe_app
from .config import Address, Config

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 30.0


async def serve(config: Config, *, dev: bool = False, stop: asyncio.Event | None = None) -> None:
    """Serve until a signal arrives or `stop` is set."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    app = create_app(config, dev=dev)
    runners = [web.AppRunner(app, access_log_class=logs.AccessLogger, access_log=logs.ACCESS_LOGGER,
                             handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)]
    await runners[0].setup()
    try:
        await _listen(runners[0], config.bind_address)
        if config.probe_bind_address is not None:
            probe = web.AppRunner(create_probe_app(app), access_log=None, handle_signals=False,
                                  shutdown_timeout=SHUTDOWN_TIMEOUT)
            await probe.setup()
            runners.append(probe)
            await _listen(probe, config.probe_bind_address)
        if dev:
            log.warning("DEVELOPMENT MODE: tokens come from the embedded dev identity provider; "
                        "never run `texas dev` in production")
        log.info("texas listening on http://%s", config.bind_address)
        await stop.wait()
        log.info("shutting down: no new connections; answering requests in flight")
    finally:
        for runner in reversed(runners):
            await runner.cleanup()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("texas stopped")


async def _listen(runner: web.AppRunner, address: Address) -> None:
    site = web.TCPSite(runner, address.host, address.port, reuse_address=True)
    await site.start()

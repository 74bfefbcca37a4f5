"""The aiohttp application: typed keys, the factory, and the lifecycle of shared objects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from texas import bodies
from texas.config import Config
from texas.errors import InternalError
from texas.introspection import handler
from texas.introspection.cache import TokenCache
from texas.introspection.handler import INTROSPECTOR, Introspector
from texas.introspection.providers import Providers
from texas.ops import logs, probes, telemetry, tracing
from texas.ops.probes import Handler
from texas.runner import LIFECYCLE, DrainingRunner, Lifecycle
from texas.tokens import handler as tokens_handler
from texas.tokens.cache import GrantCache
from texas.tokens.client import TokenClient
from texas.tokens.handler import TOKENS
from texas.tokens.service import Tokens

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
SESSION = web.AppKey("session", aiohttp.ClientSession)
PROVIDERS = probes.PROVIDERS
DEV_MODE = probes.DEV_MODE
INTROSPECT_PATH = "/api/v1/introspect"
# Connections to identity providers: a pool, shared by key set, discovery and token requests.
POOL_SIZE = 100
POOL_SIZE_PER_HOST = 32
SWEEP_SECONDS = 60
_INTERNAL_ERROR = InternalError("The service failed to handle the request; this is a fault in texas.")
_INTERNAL_ERROR_BODY = handler.inactive_body(_INTERNAL_ERROR)


def observed(route: str, handler: Handler, lifecycle: Lifecycle) -> Handler:
    """One route's handler with request id, latency and status metrics, and the last line of
    defence: an unexpected exception is a fault in texas, answered in the contract's shape
    (`internal_error`), counted, and logged with its type and frames but not its message
    (which may quote the request). A wrapper per route rather than an aiohttp middleware,
    which would add two coroutine layers to every request (`route` gives 404 and 405 handlers
    of their own, so those are observed too)."""

    internal_errors = telemetry.internal_errors(route)

    async def wrapper(request: web.Request) -> web.StreamResponse:
        rid = logs.accept_request_id(request.headers.get(logs.REQUEST_ID_HEADER))
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        telemetry.request_started()
        try:
            response = await handler(request)
        except Exception as e:
            # the formatters (ops/logs.py) keep the traceback's frames and types, never messages
            log.error(
                "internal error answering %s %s: %s", request.method, route, type(e).__name__, exc_info=e
            )
            internal_errors.inc()
            if route == INTROSPECT_PATH:
                telemetry.inc_introspection("none", _INTERNAL_ERROR.reason)
                response = web.Response(body=_INTERNAL_ERROR_BODY, content_type="application/json")
            else:
                response = web.json_response({"status": "error"}, status=500)
        finally:
            telemetry.request_finished()
            logs.request_id.reset(token)
        telemetry.observe_request(route, response.status, time.perf_counter() - started)
        response.headers[logs.REQUEST_ID_HEADER] = rid  # the access log reads it from here
        if lifecycle.draining:
            response.force_close()  # shutting down: move the client off this connection
        return response

    return wrapper


def route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Register an observed handler, and an observed 405 for the path's other methods."""
    lifecycle = app[LIFECYCLE]
    app.router.add_route(method, path, observed(path, handler, lifecycle))
    allow = "GET, HEAD" if method == "GET" else method

    async def method_not_allowed(request: web.Request) -> web.Response:
        return web.json_response({"status": "method not allowed"}, status=405, headers={"Allow": allow})

    app.router.add_route("*", path, observed(path, method_not_allowed, lifecycle))


def _not_found_for_the_rest(app: web.Application) -> None:
    async def not_found(request: web.Request) -> web.Response:
        return web.json_response({"status": "not found"}, status=404)

    not_found_observed = observed("other", not_found, app[LIFECYCLE])
    app.router.add_route("*", "/{tail:.*}", not_found_observed, name=logs.NOT_FOUND_ROUTE)


def create_app(config: Config, *, dev: bool = False) -> web.Application:
    """The service: introspection, tokens for calling other APIs, probes and metrics."""
    app = web.Application(client_max_size=bodies.MAX_BODY_BYTES)
    app[CONFIG] = config
    app[DEV_MODE] = dev
    app[LIFECYCLE] = Lifecycle()
    app.cleanup_ctx.append(_http_session)
    app.cleanup_ctx.append(_providers)
    app.cleanup_ctx.append(_tokens)
    if config.probe_bind_address is not None:
        app.cleanup_ctx.append(_probe_listener)
    route(app, "POST", INTROSPECT_PATH, handler.handle)
    route(app, "POST", tokens_handler.TOKEN_PATH, tokens_handler.token)
    route(app, "POST", tokens_handler.EXCHANGE_PATH, tokens_handler.exchange)
    route(app, "GET", "/openapi.yaml", probes.openapi)
    probes.add_routes(app, route)
    _not_found_for_the_rest(app)
    tracing.install(app)  # only with OTEL_EXPORTER_OTLP_ENDPOINT set
    return app


def create_probe_app(main: web.Application) -> web.Application:
    """The optional second listener (PROBE_BIND_ADDRESS): probes and metrics only, answering
    from the main app's providers."""
    app = web.Application()
    app[DEV_MODE] = main[DEV_MODE]
    app[LIFECYCLE] = main[LIFECYCLE]

    async def share(app: web.Application) -> AsyncIterator[None]:
        app[PROVIDERS] = main[PROVIDERS]
        yield

    app.cleanup_ctx.append(share)
    probes.add_routes(app, route)
    _not_found_for_the_rest(app)
    return app


async def create_app_from_env() -> web.AppRunner:
    """For `gunicorn -c deploy/gunicorn.conf.py texas.app:create_app_from_env`: aiohttp's worker
    takes a runner, which brings texas's access log and drain-on-shutdown along."""
    config = Config.from_env(os.environ)
    logs.configure(config.log_level, config.log_format)
    return DrainingRunner(create_app(config), access_log=config.access_log)


async def _http_session(app: web.Application) -> AsyncIterator[None]:
    """One ClientSession for every call to an identity provider. Its timeout is the key-set
    fetch's; token requests set their own (TEXAS_TOKEN_TIMEOUT_SECONDS). Answers are read
    through size limits (jwks.read_limited)."""
    config = app[CONFIG]
    timeout = aiohttp.ClientTimeout(total=config.jwks_fetch_timeout_seconds)
    connector = aiohttp.TCPConnector(limit=POOL_SIZE, limit_per_host=POOL_SIZE_PER_HOST, ttl_dns_cache=300)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"User-Agent": "texas"}
    ) as session:
        app[SESSION] = session
        yield


async def _probe_listener(app: web.Application) -> AsyncIterator[None]:
    """PROBE_BIND_ADDRESS, in every process that serves the API: with reuse_port, gunicorn's
    workers share the port as they share the API's."""
    address = app[CONFIG].probe_bind_address
    assert address is not None
    runner = web.AppRunner(create_probe_app(app), access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, address.host, address.port, reuse_address=True, reuse_port=True)
    await site.start()
    try:
        yield
    finally:
        await runner.cleanup()


async def _providers(app: web.Application) -> AsyncIterator[None]:
    """Load every provider's keys (waiting at most one fetch timeout, so start-up never hangs
    on an unreachable JWKS), then keep them fresh in the background."""
    config = app[CONFIG]
    providers = Providers.from_config(config, app[SESSION])
    app[PROVIDERS] = providers
    app[INTROSPECTOR] = Introspector(providers, TokenCache(config.token_cache_size, config.token_cache_bytes))

    first = {p.name: asyncio.create_task(p.jwks.refresh("startup")) for p in providers}
    await asyncio.wait(first.values(), timeout=config.jwks_fetch_timeout_seconds + 1)
    loops = [
        asyncio.create_task(
            p.jwks.run(initial_done=first[p.name].done() and first[p.name].result()),
            name=f"jwks-{p.name}",
        )
        for p in providers
    ]
    for p in providers:
        state = "keys loaded" if p.jwks.current() is not None else f"no keys yet ({p.jwks.last_error})"
        log.info("provider %s enabled: %s", p.name, state)
    try:
        yield
    finally:
        for task in loops:
            task.cancel()
        for task in loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for p in providers:
            await p.jwks.close()


async def _tokens(app: web.Application) -> AsyncIterator[None]:
    """The token endpoints' cache and client; background renewals and fetches still under way
    end with the app."""
    config = app[CONFIG]
    cache = GrantCache(config.grant_cache_size, config.grant_cache_bytes)
    client = TokenClient(app[SESSION], config.token_timeout_seconds)
    app[TOKENS] = Tokens(app[PROVIDERS], client, cache, introspector=app[INTROSPECTOR])

    async def sweep() -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            cache.sweep()

    sweeper = asyncio.create_task(sweep(), name="grant-cache-sweep")
    try:
        yield
    finally:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        await cache.close()

"""The ceiling: what aiohttp alone costs for one introspection-sized exchange.

It parses the same JSON body as texas (orjson) and answers a constant JSON object of the
size and shape of an active verdict, doing nothing else: no token is looked at. Every target's
req/s and p99 are read as ratios to this one, measured in the same round.

    BIND_ADDRESS=127.0.0.1:8081 python bench/ceiling.py
    gunicorn --pythonpath bench ceiling:create_app_from_env \
        --worker-class aiohttp.GunicornUVLoopWebWorker -w 2 -b 127.0.0.1:8081
"""

from __future__ import annotations

import orjson
from aiohttp import web

from serving import routes, run
from tokens import sample_claims

ANSWER = orjson.dumps({"active": True, **sample_claims()})


async def introspect(request: web.Request) -> web.Response:
    orjson.loads(await request.read())
    return web.Response(body=ANSWER, content_type="application/json")


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def create_app_from_env() -> web.Application:
    """App factory, also the entry point for gunicorn's aiohttp worker."""
    return routes(web.Application(), introspect, ready)


if __name__ == "__main__":
    run(create_app_from_env)

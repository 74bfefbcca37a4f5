"""The baseline: introspection as an app team would first write it, with PyJWT.

aiohttp + PyJWT's `PyJWKClient` (which caches the JWKS), validating RS256, `iss`, `aud`, `exp`
and `iat`, answering the same shape as texas: `{"active": true, <claims>}` or
`{"active": false, "error": ...}`. It is configured by the same environment as texas
(BIND_ADDRESS, IDPORTEN_ISSUER, IDPORTEN_JWKS_URI, IDPORTEN_AUDIENCE), so the harness starts
every target the same way.

    python bench/pyjwt_baseline.py
    gunicorn --pythonpath bench pyjwt_baseline:create_app_from_env \
        --worker-class aiohttp.GunicornUVLoopWebWorker -w 2 -b 127.0.0.1:8082
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import jwt
from aiohttp import web

from serving import routes, run

LEEWAY_SECONDS = 60
CLIENT = web.AppKey("client", jwt.PyJWKClient)
READY = web.AppKey("ready", asyncio.Event)


def inactive(error: str) -> web.Response:
    return web.json_response({"active": False, "error": error})


async def introspect(request: web.Request) -> web.Response:
    try:
        body: Any = await request.json()
        token = body["token"]
        if body.get("identity_provider") != "idporten":
            return inactive("The identity provider is not enabled.")
        key = request.app[CLIENT].get_signing_key_from_jwt(token)
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=["RS256"],
            audience=os.environ["IDPORTEN_AUDIENCE"],
            issuer=os.environ["IDPORTEN_ISSUER"],
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
    except (jwt.PyJWTError, KeyError, TypeError, ValueError, AttributeError):
        return inactive("The token is not valid.")
    claims["active"] = True
    return web.json_response(claims)


async def readyz(request: web.Request) -> web.Response:
    if request.app[READY].is_set():
        return web.Response(text="ok")
    return web.json_response({"ready": False}, status=503)


async def load_keys(app: web.Application) -> None:
    """Fetch the JWKS once before serving: PyJWKClient fetches with blocking urllib."""
    await asyncio.to_thread(app[CLIENT].get_jwk_set)
    app[READY].set()


async def create_app_from_env() -> web.Application:
    """App factory, also the entry point for gunicorn's aiohttp worker."""
    app = web.Application()
    app[CLIENT] = jwt.PyJWKClient(os.environ["IDPORTEN_JWKS_URI"], cache_keys=True)
    app[READY] = asyncio.Event()
    app.on_startup.append(load_keys)
    return routes(app, introspect, readyz)


if __name__ == "__main__":
    run(create_app_from_env)

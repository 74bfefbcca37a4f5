"""The ceiling plus one RS256 signature check per request: the "ceiling + one verify" bound,
measured rather than computed.

It parses the same body as the ceiling (orjson), checks the token's signature with
cryptography against the JWKS's one key (fetched at start-up) and answers the ceiling's
constant verdict. Nothing else: no header, no claims, no cache, no metrics; a bad signature
answers `{"active": false}`.

    BIND_ADDRESS=127.0.0.1:8083 IDPORTEN_JWKS_URI=... python bench/verify_bound.py
"""

from __future__ import annotations

import base64
import os
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from joserfc.jwk import RSAKey

from serving import routes, run
from tokens import sample_claims

ANSWER = orjson.dumps({"active": True, **sample_claims()})
INACTIVE = orjson.dumps({"active": False, "error": "The token's signature does not verify."})
PUBLIC_KEY = web.AppKey("public_key", object)
PKCS1, SHA256 = padding.PKCS1v15(), hashes.SHA256()


async def introspect(request: web.Request) -> web.Response:
    token: bytes = orjson.loads(await request.read())["token"].encode()
    signing_input, _, signature = token.rpartition(b".")
    key: Any = request.app[PUBLIC_KEY]
    try:
        key.verify(
            base64.urlsafe_b64decode(signature + b"=" * (-len(signature) % 4)), signing_input, PKCS1, SHA256
        )
    except InvalidSignature:
        return web.Response(body=INACTIVE, content_type="application/json")
    return web.Response(body=ANSWER, content_type="application/json")


async def ready(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def create_app_from_env() -> web.Application:
    """App factory, also the entry point for gunicorn's aiohttp worker."""
    async with aiohttp.ClientSession() as session, session.get(os.environ["IDPORTEN_JWKS_URI"]) as response:
        jwks = await response.json()
    app = web.Application()
    app[PUBLIC_KEY] = RSAKey.import_key(jwks["keys"][0]).public_key
    return routes(app, introspect, ready)


if __name__ == "__main__":
    run(create_app_from_env)

"""The identity provider's key endpoint for the benchmark: one RSA-2048 public key as a JWKS.

Every target fetches its keys from this one process, so they all verify against the same key
over the same kind of HTTP fetch. It binds 127.0.0.1 on the given port (0: any free port) and
prints one line, `listening on http://127.0.0.1:PORT`, once it accepts connections.

    python bench/jwks_server.py --key key.pem [--kid KID] [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
from aiohttp import web

from tokens import ISSUER, KID, public_jwks

JWKS_PATH = "/jwks"


def create_app(jwks: bytes, issuer: str, base_url_holder: list[str]) -> web.Application:
    """Serve the JWKS, and a discovery document for targets that prefer one."""

    async def jwks_handler(_: web.Request) -> web.Response:
        return web.Response(body=jwks, content_type="application/json")

    async def discovery(_: web.Request) -> web.Response:
        doc = {"issuer": issuer, "jwks_uri": base_url_holder[0] + JWKS_PATH}
        return web.Response(body=orjson.dumps(doc), content_type="application/json")

    app = web.Application()
    app.router.add_get(JWKS_PATH, jwks_handler)
    app.router.add_get("/.well-known/openid-configuration", discovery)
    return app


async def serve(key_pem: bytes, kid: str, issuer: str, port: int) -> None:
    holder = [""]
    app = create_app(orjson.dumps(public_jwks(key_pem, kid)), issuer, holder)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    holder[0] = f"http://127.0.0.1:{bound}"
    sys.stdout.write(f"listening on {holder[0]}\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve a JWKS for the benchmark.")
    parser.add_argument("--key", type=Path, required=True, help="PEM private key")
    parser.add_argument("--kid", default=KID)
    parser.add_argument("--issuer", default=ISSUER)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.key.read_bytes(), args.kid, args.issuer, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

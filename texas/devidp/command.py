"""`texas dev` and `texas token`: the service plus an embedded dev identity provider.

`texas dev` starts the dev IdP (issuer.py), then configures the service from the NAIS
variables that point at it (`dev_environment`) through `Config.from_env`, the production path:
discovery, JWKS fetches and refreshes all run for real. The dev app's client keys are made at
start and handed to the service in the production variables (MASKINPORTEN_CLIENT_JWK,
AZURE_APP_JWK, TOKEN_X_PRIVATE_JWK), so machine tokens and token exchange run for real too.
`texas token` asks a running dev IdP to mint a token and prints it, so a shell can do
`TOKEN=$(texas token idporten)`.

`texas serve` never starts the dev IdP: dev mode is a command, never a setting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from texas.devidp.http import create_devidp_app
from texas.devidp.issuer import (
    ALGORITHMS,
    PROVIDERS,
    DevIdentityProvider,
    DevIdpError,
    dev_environment,
)

log = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1:3000"
DEFAULT_IDP_BIND = "127.0.0.1:3001"
DEFAULT_IDP_URL = "http://127.0.0.1:3001"
IDP_URL_VARIABLE = "TEXAS_DEV_IDP_URL"
PROVIDER_ALIASES = {"entra_id": "azuread"}

# Dev defaults the user's environment may override: readable logs, and a short refresh
# cooldown so a key rotation from the page is picked up within a second or so.
DEV_DEFAULTS = {
    "LOG_FORMAT": "text",
    "TEXAS_JWKS_REFRESH_SECONDS": "60",
    "TEXAS_JWKS_MIN_REFRESH_SECONDS": "1",
}
# Only tuning passes through from the environment; provider variables never do, so a stray
# IDPORTEN_* in the shell cannot point dev mode anywhere but the embedded IdP.
_PASS_THROUGH_PREFIXES = ("TEXAS_JWKS_", "TEXAS_LEEWAY_", "TEXAS_TOKEN_")
_PASS_THROUGH = ("LOG_LEVEL", "LOG_FORMAT")

# Claims that are strings by nature: "--claim pid=12345678901" must not become a number.
STRING_CLAIMS = frozenset(
    {
        "pid",
        "sub",
        "aud",
        "iss",
        "jti",
        "acr",
        "client_id",
        "client_orgno",
        "azp",
        "oid",
        "tid",
        "NAVident",
        "idp",
        "scope",
        "scp",
        "sid",
        "name",
        "preferred_username",
    }
)

BANNER = "DEVELOPMENT MODE — not for production"


def configure_dev_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `texas dev`."""
    parser.description = (
        "Run texas with an embedded development identity provider acting as idporten, "
        f"maskinporten, azuread and tokenx. {BANNER}."
    )
    parser.add_argument(
        "--bind",
        default=DEFAULT_BIND,
        metavar="HOST:PORT",
        help=f"address of the texas service: introspection and tokens (default {DEFAULT_BIND})",
    )
    parser.add_argument(
        "--idp-bind",
        default=DEFAULT_IDP_BIND,
        metavar="HOST:PORT",
        help=f"address of the dev identity provider and its page (default {DEFAULT_IDP_BIND})",
    )
    parser.add_argument(
        "--alg",
        choices=ALGORITHMS,
        default="RS256",
        help="signing algorithm of the dev keys, and of the app's client keys that texas signs "
        "its assertions with (default RS256)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the dev signing keys here (private, mode 0600) so tokens survive a restart; "
        "default: new keys in memory on every start",
    )
    parser.add_argument(
        "--rotate-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="rotate the signing key this often, to watch texas pick up new keys "
        "(the page's button and POST /rotate do it once)",
    )


def configure_token_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `texas token`."""
    parser.description = "Mint a token at a running `texas dev` and print it."
    parser.add_argument(
        "provider",
        choices=(*PROVIDERS, *PROVIDER_ALIASES),
        metavar="PROVIDER",
        help=f"one of {', '.join(PROVIDERS)}",
    )
    parser.add_argument(
        "--claim",
        action="append",
        default=[],
        type=_claim,
        metavar="KEY=VALUE",
        help="set a claim; VALUE is read as JSON when it parses (numbers, arrays, objects), "
        "else as a string; pid and other identifiers stay strings; null leaves a claim out",
    )
    parser.add_argument("--level", help="the acr, e.g. idporten-loa-substantial")
    parser.add_argument(
        "--expires-in",
        type=int,
        metavar="SECONDS",
        help="lifetime in seconds (default 3600; negative for an expired token)",
    )
    parser.add_argument(
        "--idp-url",
        default=os.environ.get(IDP_URL_VARIABLE) or DEFAULT_IDP_URL,
        metavar="URL",
        help=f"the dev identity provider (default ${IDP_URL_VARIABLE} or {DEFAULT_IDP_URL})",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the whole answer (token, header, claims) as JSON"
    )


def _claim(text: str) -> tuple[str, Any]:
    """KEY=VALUE as a claim: JSON when it parses, else the string; identifiers stay strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        return key, raw
    if key in STRING_CLAIMS and not isinstance(value, (list, dict)) and value is not None:
        return key, raw
    return key, value


def _address(text: str, option: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise DevIdpError(f"{option} must be HOST:PORT, not {text!r}")
    return host, int(port)


def _url_host(host: str) -> str:
    """A host to put in URLs: a wildcard bind is reached through loopback."""
    if host in ("0.0.0.0", "", "*"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _bind_socket(host: str, port: int) -> socket.socket:
    """Bind first, so the IdP's URLs carry the real port even for port 0."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock


def dev_service_environment(idp: DevIdentityProvider, bind: str, environ: dict[str, str]) -> dict[str, str]:
    """What `texas dev` hands to Config.from_env: dev defaults, tuning, the dev providers
    and the dev app's client ids and private keys."""
    passed = {k: v for k, v in environ.items() if k in _PASS_THROUGH or k.startswith(_PASS_THROUGH_PREFIXES)}
    return {**DEV_DEFAULTS, **passed, **dev_environment(idp.base_url, idp.clients), "BIND_ADDRESS": bind}


def nais_addresses(service_url: str) -> dict[str, str]:
    """The three addresses NAIS gives an app that runs Texas, here pointing at `texas dev`."""
    return {
        "NAIS_TOKEN_ENDPOINT": f"{service_url}/api/v1/token",
        "NAIS_TOKEN_EXCHANGE_ENDPOINT": f"{service_url}/api/v1/token/exchange",
        "NAIS_TOKEN_INTROSPECTION_ENDPOINT": f"{service_url}/api/v1/introspect",
    }


def _instructions(service_url: str, idp: DevIdentityProvider, idp_url: str) -> str:
    nais = nais_addresses(service_url)
    exports = "\n".join(f"  export {name}={url}" for name, url in nais.items())
    idp_option = "" if idp_url == DEFAULT_IDP_URL else f" --idp-url {idp_url}"
    state = str(idp.state_dir) if idp.state_dir is not None else "in memory, new on every start"
    return f"""
texas dev: {BANNER}

  page           {idp_url}/
  providers      {", ".join(PROVIDERS)}
    discovery    {idp_url}/<provider>/.well-known/openid-configuration
    mint         POST {idp_url}/<provider>/token, a JSON body
                 {{"claims": {{...}}, "level": "...", "expires_in": 3600}}, all optional
  signing        {idp.alg}, kid {idp.current_kid} (keys: {state})
  client keys    maskinporten, azuread, tokenx: made at start, handed to texas

The three addresses an app on NAIS gets:

{exports}

Try it:

  # a machine token (Maskinporten)
  curl -s {nais["NAIS_TOKEN_ENDPOINT"]} -d identity_provider=maskinporten -d target=nav:test/api

  # a citizen's token exchanged for one to call another app (TokenX)
  USER_TOKEN=$(texas token idporten{idp_option})
  curl -s {nais["NAIS_TOKEN_EXCHANGE_ENDPOINT"]} -d identity_provider=tokenx \\
    -d target=dev-gcp:team:app -d "user_token=$USER_TOKEN"

  # introspection
  TOKEN=$(texas token idporten{idp_option} --claim pid=12345678901 --level idporten-loa-substantial)
  curl -s {nais["NAIS_TOKEN_INTROSPECTION_ENDPOINT"]} -d identity_provider=idporten -d "token=$TOKEN"

  Entra ID works the same way: identity_provider=azuread, target=api://dev-gcp.team.app/.default
  (with `texas token azuread` as the user_token of an exchange).
"""


async def _run_dev(args: argparse.Namespace) -> int:
    from texas.config import Config
    from texas.errors import ConfigError
    from texas.ops import logs
    from texas.server import serve

    try:
        idp_host, idp_port = _address(args.idp_bind, "--idp-bind")
        service_host, service_port = _address(args.bind, "--bind")
        if service_port == 0:
            raise DevIdpError("--bind needs a fixed port: the page and the example point at it")
        sock = _bind_socket(idp_host, idp_port)
    except DevIdpError as e:
        print(f"texas dev: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"texas dev: cannot listen on {args.idp_bind}: {e.strerror or e}", file=sys.stderr)
        return 1
    idp_url = f"http://{_url_host(idp_host)}:{sock.getsockname()[1]}"
    service_url = f"http://{_url_host(service_host)}:{service_port}"

    try:
        idp = DevIdentityProvider(idp_url, args.alg, args.state_dir)
        # An empty secrets folder: dev mode never reads /var/run/secrets/nais.io.
        with tempfile.TemporaryDirectory(prefix="texas-dev-") as empty:
            env = dev_service_environment(idp, args.bind, dict(os.environ))
            config = Config.from_env(env, secrets_dir=Path(empty), insecure_http=True)
    except (ConfigError, DevIdpError, OSError, ValueError) as e:
        sock.close()
        print(f"texas dev: {e}", file=sys.stderr)
        return 2
    logs.configure(config.log_level, config.log_format)

    runner = web.AppRunner(create_devidp_app(idp, service_url), access_log=None)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
        print(_instructions(service_url, idp, idp_url), flush=True)
        log.warning("%s: the embedded identity provider at %s signs any token asked for", BANNER, idp_url)
        if idp_host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "the dev identity provider listens on %s, beyond this machine: anyone "
                "who reaches it can mint tokens that this texas accepts",
                args.idp_bind,
            )
        rotating = _rotate_every(idp, args.rotate_every) if args.rotate_every else None
        try:
            await serve(config, dev=True)
        finally:
            if rotating is not None:
                rotating.cancel()
    except OSError as e:
        print(f"texas dev: cannot serve on {args.bind}: {e.strerror or e}", file=sys.stderr)
        return 1
    finally:
        await runner.cleanup()
    return 0


def _rotate_every(idp: DevIdentityProvider, seconds: float) -> asyncio.Task[None]:
    async def rotate() -> None:
        while True:
            await asyncio.sleep(seconds)
            log.info("rotated the dev signing key: now kid %s", idp.rotate())

    return asyncio.create_task(rotate(), name="devidp-rotation")


def run_dev(args: argparse.Namespace) -> int:
    """`texas dev`: blocks until SIGINT/SIGTERM; returns the exit code."""
    from texas.server import run_async  # the loop `texas serve` runs on

    if args.rotate_every is not None and args.rotate_every <= 0:
        print("texas dev: --rotate-every needs a positive number of seconds", file=sys.stderr)
        return 2
    try:
        return run_async(_run_dev(args))
    except KeyboardInterrupt:
        return 0


def run_token(args: argparse.Namespace) -> int:
    """`texas token`: mint at the running dev IdP; the token alone on stdout."""
    provider = PROVIDER_ALIASES.get(args.provider, args.provider)
    body: dict[str, Any] = {"claims": dict(args.claim)}
    if args.level is not None:
        body["level"] = args.level
    if args.expires_in is not None:
        body["expires_in"] = args.expires_in
    url = f"{args.idp_url.rstrip('/')}/{provider}/token"
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    # No proxies: the dev IdP is local, and an HTTP_PROXY in the shell must not intercept it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=10) as resp:
            answer = json.load(resp)
    except urllib.error.HTTPError as e:
        print(f"texas token: {url} answered {e.code}: {_error_text(e)}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        print(
            f"texas token: cannot reach the dev identity provider at {args.idp_url} "
            f"({reason}); is `texas dev` running?",
            file=sys.stderr,
        )
        return 1
    except ValueError:
        print(f"texas token: {url} did not answer JSON", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))
    else:
        print(answer["access_token"])
    return 0


def _error_text(e: urllib.error.HTTPError) -> str:
    try:
        return str(json.load(e)["error"])
    except (ValueError, KeyError, TypeError):
        return e.reason or "error"

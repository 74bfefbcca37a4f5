"""Instructions per step of texas's request path, counted in-process under callgrind.

    python bench/steps.py                  # about 3 minutes; needs valgrind

instructions.py says how much texas adds per request; this says where. Each step of the
`seen` and `new` paths (texas's own functions, called as the handler calls them, on real
keys fetched from a local JWKS server and real RS256 tokens) runs in a loop at two sizes
inside one process under callgrind, and the process zeroes and dumps its own counters around
each loop (`callgrind_control -z` / `-d`): the difference between the sizes, divided by the
difference in loop count, is the step's instructions per call, with the loop's and the
control's cost cancelled out. `observed wrapper` replays what texas/app.py's wrapper does
around the handler (request id, context variable, in-flight gauge, latency and status metrics,
the X-Request-Id header) on a real aiohttp Response.

Crypto under valgrind runs OpenSSL's generic code (no SHA-NI, ADX, AVX-512), so the SHA-256
and RSA steps count more instructions than they run natively; see calibrate.py.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from tokens import AUDIENCE, ISSUER, KID, TokenSpec, mint, new_key_pem, public_jwks

LOOPS = (200, 600)
_SUMMARY = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def run_coroutine(coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never suspends (a cache hit, a key set held), without a loop."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("the step suspended")


class Counter:
    """Zero and dump this process's callgrind counters; read the dump's total."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.pid = str(os.getpid())
        self.dumps = 0

    def control(self, flag: str) -> None:
        subprocess.run(["callgrind_control", flag, self.pid], check=True, capture_output=True)

    def measure(self, step: Callable[[], object], count: int) -> int:
        self.control("-z")
        for _ in range(count):
            step()
        self.control("-d")
        self.dumps += 1
        path = Path(f"{self.out}.{os.getpid()}.{self.dumps}")
        found = _SUMMARY.search(path.read_bytes())
        assert found is not None, "callgrind wrote no total"
        return int(found.group(1))


async def steps(tmp: Path) -> dict[str, Callable[[], object]]:
    """Every step, ready to call; keys fetched from a local JWKS server first."""
    import aiohttp
    from aiohttp import web
    from texas import bodies
    from texas.config import ProviderConfig
    from texas.introspection import handler
    from texas.introspection.cache import Entry, TokenCache
    from texas.introspection.jwks import JwksSettings
    from texas.introspection.providers import Provider, Providers
    from texas.introspection.validation import (
        check_claims,
        check_signature,
        decode_payload,
        select_key,
        split,
    )
    from texas.ops import logs, telemetry

    pem = (tmp / "key.pem").read_bytes()
    jwks_app = web.Application()
    document = orjson.dumps(public_jwks(pem, KID))

    async def serve_jwks(_: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    jwks_app.router.add_get("/jwks", serve_jwks)
    runner = web.AppRunner(jwks_app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    session = aiohttp.ClientSession()
    config = ProviderConfig("idporten", AUDIENCE, ISSUER, f"http://127.0.0.1:{port}/jwks")
    provider = Provider(config, session, JwksSettings(), 60.0)
    assert await provider.jwks.refresh("startup"), "the JWKS did not load"
    policy = provider.policy
    assert policy is not None

    tokens = (tmp / "tokens").read_text().split()
    seen_token = tokens[0]
    fresh = iter(tokens[1:])
    body = orjson.dumps({"identity_provider": "idporten", "token": seen_token})
    introspect = handler.Introspector(Providers({"idporten": provider}), TokenCache(100))
    parsed = handler.parse_request("application/json", body)
    verdict = await introspect(parsed)
    assert verdict.outcome == "active", verdict
    cache = introspect.cache
    key = cache.key("idporten", seen_token)
    entry = cache.get(key)
    assert entry is not None
    now = time.time()
    compact = split(seen_token)
    snapshot = provider.jwks.current()
    assert snapshot is not None
    prepared = select_key(compact, snapshot)
    claims, payload = decode_payload(compact)
    times = check_claims(claims, policy, now)
    verified = handler.Verified(claims, payload, prepared, times)
    response = web.Response(body=b"{}", content_type="application/json")

    def wrapper_parts() -> None:  # texas/app.py: observed.<locals>.wrapper, minus the handler
        rid = logs.accept_request_id(None)
        token = logs.request_id.set(rid)
        started = time.perf_counter()
        telemetry.request_started()
        telemetry.request_finished()
        logs.request_id.reset(token)
        telemetry.observe_request("/api/v1/introspect", 200, time.perf_counter() - started)
        response.headers[logs.REQUEST_ID_HEADER] = rid

    def flush_one() -> None:
        telemetry.request_started()
        telemetry.request_finished()
        telemetry.observe_request("/api/v1/introspect", 200, 0.0003)
        telemetry.inc_introspection("idporten", "active")
        telemetry.inc_token_cache(True)
        telemetry.flush()

    def new_token() -> None:
        introspect.decide(handler.IntrospectRequest("idporten", next(fresh), None))

    def cache_put() -> None:
        cache.put(cache.key("idporten", next(fresh)), entry)

    return {
        "(reference: an empty step)": lambda: None,
        "(reference: orjson.loads of the body, which the ceiling does too)": lambda: orjson.loads(body),
        "seen: Introspector.decide (cache hit)": lambda: introspect.decide(parsed),
        "  TokenCache.key (sha256)": lambda: cache.key("idporten", seen_token),
        "  TokenCache.get (+ hit counter)": lambda: cache.get(key),
        "  RemoteJwks.current + KeySnapshot.holds": lambda: provider.jwks.current().holds(prepared),  # type: ignore[union-attr]
        "  Times.check": lambda: entry.times.check(60.0, now),
        "bodies.decode (identity)": lambda: bodies.decode("", body),
        "handler: parse_request": lambda: handler.parse_request("application/json", body),
        "handler: telemetry.inc_introspection": lambda: telemetry.inc_introspection("idporten", "active"),
        "app: observed wrapper around the handler": wrapper_parts,
        "  logs.accept_request_id (new id)": lambda: logs.accept_request_id(None),
        "  request_id context variable set + reset": lambda: logs.request_id.reset(logs.request_id.set("x")),
        "  telemetry.request_started + request_finished": lambda: (
            telemetry.request_started(),
            telemetry.request_finished(),
        ),
        "  telemetry.observe_request (histogram + counter)": lambda: telemetry.observe_request(
            "/api/v1/introspect", 200, 0.0003
        ),
        "  telemetry.flush (after one request's counts)": flush_one,
        "  response.headers['X-Request-Id'] = rid": lambda: response.headers.__setitem__("X-Request-Id", "x"),
        "new: Introspector.decide (cache miss, full cache)": new_token,
        "  split": lambda: split(seen_token),
        "  RemoteJwks.keys_for": lambda: run_coroutine(provider.jwks.keys_for(KID)),
        "  select_key": lambda: select_key(compact, snapshot),
        "  check_signature (RSA, generic code under valgrind)": lambda: check_signature(compact, prepared),
        "  decode_payload": lambda: decode_payload(compact),
        "  check_claims": lambda: check_claims(claims, policy, now),
        "  active_body": lambda: handler.active_body(verified),
        "  TokenCache.key + put (evicting)": cache_put,
        "  Entry(...)": lambda: Entry(body=b"", key=prepared, times=times, acr="x"),
    }


async def child(tmp: Path) -> None:
    """Under callgrind: count every step, print one line each."""
    table = await steps(tmp)
    counter = Counter(tmp / "steps.out")
    for name, step in table.items():
        for _ in range(50):  # warm-up: caches, the adaptive interpreter
            step()
        low, high = (counter.measure(step, n) for n in LOOPS)
        print(f"{(high - low) / (LOOPS[1] - LOOPS[0]):10,.0f}  {name}", flush=True)


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        asyncio.run(child(Path(sys.argv[2])))
        return 0
    with tempfile.TemporaryDirectory(prefix="texas-steps-") as tmp_name:
        tmp = Path(tmp_name)
        pem = new_key_pem()
        (tmp / "key.pem").write_bytes(pem)
        # one seen token, and a distinct one for every `new` call (warm-up, two loops, twice)
        count = 2 * (50 + sum(LOOPS)) + 1
        (tmp / "tokens").write_text("\n".join(mint(TokenSpec(key_pem=pem), count)))
        print("instructions per call, in-process under callgrind", flush=True)
        subprocess.run(
            [
                *("valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp / 'steps.out'}.%p"),
                *(sys.executable, __file__, "--child", str(tmp)),
            ],
            check=True,
            stderr=subprocess.DEVNULL,
            cwd=Path(__file__).parent,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

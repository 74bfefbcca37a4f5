"""Soak: sustained mixed traffic against `texas serve`, with errors, latency and memory over time.

    python bench/soak.py [--duration 300] [--concurrency 8] [--rate 0] [--interval 10] [--warmup S]

Starts a local JWKS server for the four providers and `texas serve` as a subprocess (explicit
issuer and JWKS URI per provider, LOG_LEVEL=WARNING), then drives it from a bounded aiohttp
client loop: `--concurrency` workers, each waiting for its answer before the next request,
optionally capped at `--rate` requests per second in all. The mix:

    repeated  a pool of valid tokens, seen again and again (the token cache)   active
    fresh     a newly signed ES256 token each time (fills the cache, evicts)   active
    forged    valid claims signed by another key under a published kid         bad_signature
    unknown   a made-up kid every time (negative cache, refresh cooldown)      unknown_key
    garbage   bad JSON, wrong content type, no token                           bad_request

Every `--interval` seconds it prints requests, errors (wrong verdict, non-200, connection
failure), latency p50/p99, the server's RSS from /proc and its token-cache size; at the end a
summary with RSS first/last/max and whether memory stayed flat after the warm-up (the first
third of the run, at least 30 s, or --warmup: the token cache fills up there, so pick a rate
at which it does). Not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey

REPO_ROOT = Path(__file__).resolve().parent.parent
AUDIENCE = "dev-gcp:soak:app"
# provider -> (variable prefix, audience variable or None)
PROVIDERS: dict[str, tuple[str, str | None]] = {
    "idporten": ("IDPORTEN", "IDPORTEN_AUDIENCE"),
    "maskinporten": ("MASKINPORTEN", None),
    "azuread": ("AZURE", "AZURE_APP_CLIENT_ID"),
    "tokenx": ("TOKEN_X", "TOKEN_X_CLIENT_ID"),
}
MIX = {"repeated": 50, "fresh": 20, "forged": 10, "unknown": 10, "garbage": 10}
POOL_SIZE = 64
FLAT_TOLERANCE_MB = 5.0
FLAT_TOLERANCE_SHARE = 0.05


# --- the identity provider's side -----------------------------------------------------------


class Keys:
    """The published RS256 and ES256 keys, and an attacker's key that is not published."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(2048)
        self.ec = ECKey.generate_key("P-256")
        self.attacker = RSAKey.generate_key(2048)

    def jwks(self) -> bytes:
        keys = [
            {**self.rsa.as_dict(private=False), "kid": "soak-rsa", "use": "sig"},
            {**self.ec.as_dict(private=False), "kid": "soak-ec", "use": "sig"},
        ]
        return json.dumps({"keys": keys}).encode()


class Issuer:
    """A JWKS per provider under /<provider>/jwks, counting fetches."""

    def __init__(self, keys: Keys) -> None:
        self.document = keys.jwks()
        self.fetches = 0
        self.base_url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{provider}/jwks", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _jwks(self, request: web.Request) -> web.Response:
        self.fetches += 1
        return web.Response(body=self.document, content_type="application/json")

    def issuer(self, provider: str) -> str:
        return f"{self.base_url}/{provider}"


def environment(issuer: Issuer, port: int) -> dict[str, str]:
    """The NAIS variables for all four providers, with explicit issuer and JWKS URI."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "VIRTUAL_ENV") if name in os.environ}
    env.update(BIND_ADDRESS=f"127.0.0.1:{port}", LOG_LEVEL="WARNING", LOG_FORMAT="text")
    for provider, (prefix, audience) in PROVIDERS.items():
        env[f"{prefix}_ENABLED"] = "true"
        if audience is not None:
            env[audience] = AUDIENCE
        if provider == "azuread":
            env["AZURE_OPENID_CONFIG_ISSUER"] = issuer.issuer(provider)
            env["AZURE_OPENID_CONFIG_JWKS_URI"] = f"{issuer.issuer(provider)}/jwks"
        else:
            env[f"{prefix}_ISSUER"] = issuer.issuer(provider)
            env[f"{prefix}_JWKS_URI"] = f"{issuer.issuer(provider)}/jwks"
    return env


# --- requests ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    kind: str
    body: bytes
    content_type: str
    expected: str  # "active" or a reason code


class Traffic:
    """Makes the requests of the mix, with the verdict each one must get."""

    def __init__(self, keys: Keys, issuer: Issuer, lifetime: float) -> None:
        self.keys = keys
        self.issuer = issuer
        self.lifetime = lifetime
        self.providers = list(PROVIDERS)
        self.repeated = [
            self._body(p, self._token(p, keys.rsa, "RS256", "soak-rsa"))
            for p in self.providers
            for _ in range(POOL_SIZE // len(PROVIDERS))
        ]
        self.forged = [
            self._body(p, self._token(p, keys.attacker, "RS256", "soak-rsa"))
            for p in self.providers
            for _ in range(POOL_SIZE // len(PROVIDERS))
        ]
        self.kinds = list(MIX)
        self.weights = list(MIX.values())

    def _claims(self, provider: str) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer.issuer(provider),
            "sub": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": now + int(self.lifetime),
            "jti": uuid.uuid4().hex,
            "acr": "idporten-loa-high",
        }
        if PROVIDERS[provider][1] is not None:
            claims["aud"] = AUDIENCE
        return claims

    def _token(self, provider: str, key: RSAKey | ECKey, alg: str, kid: str) -> str:
        header = {"alg": alg, "kid": kid, "typ": "JWT"}
        payload = json.dumps(self._claims(provider)).encode()
        return jws.serialize_compact(header, payload, key, algorithms=[alg])

    @staticmethod
    def _body(provider: str, token: str) -> bytes:
        return json.dumps({"identity_provider": provider, "token": token}).encode()

    def next(self) -> Shot:
        kind = random.choices(self.kinds, self.weights)[0]
        provider = random.choice(self.providers)
        if kind == "repeated":
            return Shot(kind, random.choice(self.repeated), "application/json", "active")
        if kind == "fresh":
            token = self._token(provider, self.keys.ec, "ES256", "soak-ec")
            return Shot(kind, self._body(provider, token), "application/json", "active")
        if kind == "forged":
            return Shot(kind, random.choice(self.forged), "application/json", "bad_signature")
        if kind == "unknown":
            header = json.dumps({"alg": "RS256", "kid": uuid.uuid4().hex}).encode()
            token = ".".join(_b64(part) for part in (header, b'{"iss":"x"}', os.urandom(256)))
            return Shot(kind, self._body(provider, token), "application/json", "unknown_key")
        body, content_type = random.choice(
            [
                (os.urandom(64), "application/json"),
                (b'{"identity_provider": "idporten"}', "application/json"),
                (b"token=&identity_provider=idporten", "application/x-www-form-urlencoded"),
                (b"<xml/>", "text/xml"),
            ]
        )
        return Shot(kind, body, content_type, "bad_request")


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# --- measuring ----------------------------------------------------------------------------------


@dataclass
class Window:
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


@dataclass
class Totals:
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds, MiB)


def rss_mib(pid: int) -> float:
    """Resident set size of `pid` from /proc (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status")


def percentile(values: Sequence[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))]


async def cache_entries(session: aiohttp.ClientSession, base_url: str) -> str:
    try:
        async with session.get(f"{base_url}/metrics") as response:
            for line in (await response.text()).splitlines():
                if line.startswith("texas_token_cache_entries "):
                    return str(int(float(line.split()[1])))
    except aiohttp.ClientError:
        pass
    return "?"


class Limiter:
    """Spaces requests `1 / rate` seconds apart across all workers (rate 0: no limit)."""

    def __init__(self, rate: float) -> None:
        self.gap = 1 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    async def wait(self) -> None:
        if not self.gap:
            return
        now = time.monotonic()
        slot = max(now, self.next)
        self.next = slot + self.gap
        if slot > now:
            await asyncio.sleep(slot - now)


async def worker(
    session: aiohttp.ClientSession,
    url: str,
    traffic: Traffic,
    limiter: Limiter,
    deadline: float,
    totals: Totals,
    window: list[Window],
) -> None:
    while time.monotonic() < deadline:
        await limiter.wait()
        shot = traffic.next()
        started = time.perf_counter()
        try:
            async with session.post(url, data=shot.body, headers={"Content-Type": shot.content_type}) as r:
                raw = await r.read()
                status = r.status
        except (TimeoutError, aiohttp.ClientError) as e:
            error: str | None = f"{shot.kind}: {type(e).__name__}"
        else:
            error = check(shot, status, raw)
        elapsed = time.perf_counter() - started
        totals.requests[shot.kind] += 1
        totals.latencies.append(elapsed)
        window[0].latencies.append(elapsed)
        if error is not None:
            totals.errors[error] += 1
            window[0].errors[error] += 1


def check(shot: Shot, status: int, raw: bytes) -> str | None:
    """None when the answer is the verdict the shot must get, else a short error label."""
    if status != 200:
        return f"{shot.kind}: HTTP {status}"
    try:
        answer = json.loads(raw)
    except ValueError:
        return f"{shot.kind}: not JSON"
    got = "active" if answer.get("active") is True else answer.get("reason")
    return None if got == shot.expected else f"{shot.kind}: {got} instead of {shot.expected}"


async def report(
    session: aiohttp.ClientSession,
    base_url: str,
    pid: int,
    started: float,
    deadline: float,
    interval: float,
    totals: Totals,
    window: list[Window],
) -> None:
    print(
        f"{'t(s)':>6} {'requests':>9} {'req/s':>7} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'RSS MiB':>8} {'cache':>6}",
        flush=True,
    )
    totals.rss.append((0.0, rss_mib(pid)))
    while True:
        now = time.monotonic()
        if now >= deadline:
            return
        await asyncio.sleep(min(interval, deadline - now))
        current, window[0] = window[0], Window()
        t = time.monotonic() - started
        rss = rss_mib(pid)
        totals.rss.append((t, rss))
        n = len(current.latencies)
        print(
            f"{t:6.0f} {n:9d} {n / interval:7.0f} {sum(current.errors.values()):7d} "
            f"{percentile(current.latencies, 0.50) * 1000:8.2f} "
            f"{percentile(current.latencies, 0.99) * 1000:8.2f} {rss:8.1f} "
            f"{await cache_entries(session, base_url):>6}",
            flush=True,
        )
        for error, count in current.errors.most_common(3):
            print(f"        {count} x {error}", flush=True)


def summary(
    totals: Totals, duration: float, warmup: float, fetches: int, cache: str, exit_code: int | None
) -> bool:
    """Print the summary; True when there were no errors and memory stayed flat."""
    rss = totals.rss
    after = [m for t, m in rss if t >= warmup] or [rss[-1][1]]
    baseline = after[0]
    growth = max(after) - baseline
    allowed = max(FLAT_TOLERANCE_MB, baseline * FLAT_TOLERANCE_SHARE)
    flat = growth <= allowed
    total = sum(totals.requests.values())
    errors = sum(totals.errors.values())
    print("\nsummary")
    print(
        f"  duration        {duration:.0f} s, {total} requests ({total / duration:.0f}/s), "
        + ", ".join(f"{k} {v}" for k, v in totals.requests.most_common())
    )
    print(
        f"  errors          {errors}"
        + "".join(f"\n                  {v} x {k}" for k, v in totals.errors.most_common(5))
    )
    print(
        f"  latency         p50 {percentile(totals.latencies, 0.5) * 1000:.2f} ms, "
        f"p99 {percentile(totals.latencies, 0.99) * 1000:.2f} ms, "
        f"max {max(totals.latencies, default=0) * 1000:.1f} ms"
    )
    print(
        f"  RSS             first {rss[0][1]:.1f} MiB, last {rss[-1][1]:.1f} MiB, "
        f"max {max(m for _, m in rss):.1f} MiB"
    )
    print(
        f"  after warm-up   ({warmup:.0f} s) from {baseline:.1f} MiB, growth {growth:+.1f} MiB "
        f"(allowed {allowed:.1f}): {'flat' if flat else 'NOT flat'}"
    )
    print(f"  token cache     {cache} entries at the end")
    print(f"  JWKS fetches    {fetches} over the run (4 providers)")
    print(f"  SIGTERM         exit code {exit_code}")
    return errors == 0 and flat and exit_code == 0


async def soak(args: argparse.Namespace) -> bool:
    keys = Keys()
    issuer = Issuer(keys)
    await issuer.start()
    port = args.port or _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tempfile.NamedTemporaryFile(prefix="texas-soak-", suffix=".log", delete=False)  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "texas", "serve"],
        env=environment(issuer, port),
        cwd=REPO_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    exit_code: int | None = None
    try:
        timeout = aiohttp.ClientTimeout(total=10)
        connector = aiohttp.TCPConnector(limit=args.concurrency + 2)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await wait_ready(session, base_url, server)
            traffic = Traffic(keys, issuer, lifetime=args.duration + 3600)
            print(
                f"texas serve (pid {server.pid}) on {base_url}; log {log.name}; "
                f"{args.concurrency} workers, rate {args.rate or 'unlimited'}/s, "
                f"{args.duration:.0f} s",
                flush=True,
            )
            fetches_before = issuer.fetches
            totals, window = Totals(), [Window()]
            started = time.monotonic()
            deadline = started + args.duration
            limiter = Limiter(args.rate)
            url = f"{base_url}/api/v1/introspect"
            await asyncio.gather(
                report(session, base_url, server.pid, started, deadline, args.interval, totals, window),
                *(
                    worker(session, url, traffic, limiter, deadline, totals, window)
                    for _ in range(args.concurrency)
                ),
            )
            fetches = issuer.fetches - fetches_before
            cache = await cache_entries(session, base_url)
        server.send_signal(signal.SIGTERM)
        exit_code = await asyncio.to_thread(server.wait, 30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        await issuer.stop()
        log.close()
    warmup = args.warmup if args.warmup is not None else max(30.0, args.duration / 3)
    return summary(totals, args.duration, warmup, fetches, cache, exit_code)


async def wait_ready(session: aiohttp.ClientSession, base_url: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"texas serve exited with {server.returncode}")
        try:
            async with session.get(f"{base_url}/readyz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError("texas serve did not become ready within 30 s")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300, help="seconds of traffic (default 300)")
    parser.add_argument("--concurrency", type=int, default=8, help="client workers (default 8)")
    parser.add_argument("--rate", type=float, default=0, help="requests per second in all (0: no cap)")
    parser.add_argument("--interval", type=float, default=10, help="seconds between reports (default 10)")
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds before memory must stay flat (default: a third, at least 30)",
    )
    parser.add_argument("--port", type=int, default=0, help="texas's port (default: a free one)")
    args = parser.parse_args(argv)
    return 0 if asyncio.run(soak(args)) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Test parts: real keys, real signatures, a real local issuer over HTTP, texas under gunicorn.

`FakeIssuer` is a small aiohttp app that plays one or more identity providers: a discovery
document and a JWKS per provider, which a test can change (rotate, remove, break, slow down)
while counting every fetch. `sign` makes compact JWS with joserfc, including ones no honest
issuer would make, for the attack tests. `running_gunicorn` runs texas as deployed:
`gunicorn -c deploy/gunicorn.conf.py texas.app:create_app_from_env` with two workers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jws
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import texas.app  # noqa: F401  (registers every metric of the service)
from texas.ops import telemetry

PROVIDERS = ("idporten", "maskinporten", "azuread", "tokenx")
AUDIENCES: Mapping[str, str | None] = {
    "idporten": "dev-gcp:team:app",
    "maskinporten": None,
    "azuread": "9f5c0d5e-0000-4000-8000-00000000c11e",
    "tokenx": "dev-gcp:team:app",
}
AUDIENCE_VARIABLE = {
    "idporten": "IDPORTEN_AUDIENCE",
    "azuread": "AZURE_APP_CLIENT_ID",
    "tokenx": "TOKEN_X_CLIENT_ID",
}
PREFIX = {"idporten": "IDPORTEN", "maskinporten": "MASKINPORTEN", "azuread": "AZURE", "tokenx": "TOKEN_X"}

ROOT = Path(__file__).resolve().parent.parent
GUNICORN_CONF = ROOT / "deploy" / "gunicorn.conf.py"
WORKERS = 2

# Series names each metric type adds to its family name in the exposition. `_created` is left
# out on purpose: prometheus-client's multiprocess mode (gunicorn) does not export it.
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}


def exported_metrics() -> dict[str, dict[str, frozenset[str]]]:
    """Every metric texas exposes at /metrics: family name -> its series names -> their label
    names, taken from the metrics texas registers (so a new metric needs no list by hand)."""
    families = {telemetry.STALENESS_NAME: {telemetry.STALENESS_NAME: frozenset({"provider"})}}
    # prometheus-client keeps no public map from a name to its labels; these are its own.
    collectors = {id(c): c for c in REGISTRY._names_to_collectors.values()}
    for collector in collectors.values():
        if isinstance(collector, MetricWrapperBase) and collector._name.startswith("texas_"):
            labels = frozenset(collector._labelnames)
            families[collector._name] = {
                collector._name + suffix: labels | ({"le"} if suffix == "_bucket" else set())
                for suffix in _SUFFIXES.get(collector._type, ("",))
            }
    return families


def exported_series() -> dict[str, frozenset[str]]:
    """Every series name texas exposes at /metrics, with its label names."""
    return {name: labels for family in exported_metrics().values() for name, labels in family.items()}


def requires_tool(name: str, install: str) -> pytest.MarkDecorator:
    """Skip when the program `name` is not installed, except under CI (CI set), where the test
    runs and fails: .ci/run installs it."""
    return pytest.mark.skipif(
        shutil.which(name) is None and not os.environ.get("CI"),
        reason=f"{name} is not installed ({install})",
    )


def installed(name: str) -> str:
    """The path of the program `name`; fails the test (under CI) when it is missing."""
    path = shutil.which(name)
    assert path is not None, f"{name} is not installed, and CI needs it"
    return path


@functools.cache
def make_key(alg: str, kid: str) -> RSAKey | ECKey | OKPKey:
    """A private key for `alg`, the same object for the same (alg, kid) within a test run."""
    if alg.startswith(("RS", "PS")):
        key: RSAKey | ECKey | OKPKey = RSAKey.generate_key(2048)
    elif alg == "ES256":
        key = ECKey.generate_key("P-256")
    elif alg == "ES384":
        key = ECKey.generate_key("P-384")
    elif alg == "ES512":
        key = ECKey.generate_key("P-521")
    elif alg == "EdDSA":
        key = OKPKey.generate_key("Ed25519")
    else:
        raise ValueError(alg)
    return key


def public_jwk(key: RSAKey | ECKey | OKPKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk = key.as_dict(private=False)
    jwk.update(kid=kid, use="sig", **extra)
    return jwk


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign(
    claims: Mapping[str, Any] | bytes,
    key: RSAKey | ECKey | OKPKey,
    *,
    alg: str = "RS256",
    kid: str | None = "key-1",
    header: Mapping[str, Any] | None = None,
) -> str:
    """A compact JWS of `claims` (a mapping, or raw payload bytes taken as they are)."""
    protected: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        protected["kid"] = kid
    protected.update(header or {})
    payload = claims if isinstance(claims, bytes) else json.dumps(claims).encode()
    registry = jws.JWSRegistry(algorithms=[alg], strict_check_header=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # EdDSA: RFC 9864 prefers "Ed25519"
        return jws.serialize_compact(protected, payload, key, registry=registry)


def sign_raw(header: Mapping[str, Any] | bytes, payload: bytes, signer: Any) -> str:
    """A JWS from raw parts, with `signer(signing_input) -> signature bytes`."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    signing_input = f"{b64(h)}.{b64(payload)}".encode()
    return f"{signing_input.decode()}.{b64(signer(signing_input))}"


def claims_for(provider: str, issuer: str, now: float | None = None, **overrides: Any) -> dict[str, Any]:
    now = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": "x3rc5Y2QkqdmRKo0mF3yYoZ7Q3r3pQ7sXbQKqD5fd9A",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now) + 3600,
        "jti": "5e6a1b9e-2b42-4c1b-9d3e-8c9a4f1e2d3c",
    }
    audience = AUDIENCES[provider]
    if audience is not None:
        claims["aud"] = audience
    if provider == "idporten":
        claims.update(pid="12345678901", acr="idporten-loa-high", amr=["BankID"], client_id="client")
    elif provider == "maskinporten":
        claims.update(
            scope="nav:test/api", consumer={"authority": "iso6523-actorid-upis", "ID": "0192:889640782"}
        )
    elif provider == "tokenx":
        claims.update(
            pid="12345678901", acr="idporten-loa-substantial", idp="idporten", client_id="cluster:team:app"
        )
    else:
        claims.update(azp="caller-client-id", oid="00000000-0000-0000-0000-0000000000aa", roles=["access"])
    for name, value in overrides.items():
        if value is ...:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


@dataclass
class ProviderState:
    """What the fake issuer serves for one provider; tests change it freely."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    mode: str = "ok"  # ok | down | garbage | empty | hang | reset | enc_only | not_modified
    hang_seconds: float = 30.0
    cache_control: str | None = None
    etag: bool = True
    content_type: str = "application/json"
    discovery: dict[str, Any] = field(default_factory=dict)  # members that override the document's
    jwks_fetches: int = 0
    jwks_304: int = 0
    discovery_fetches: int = 0


class FakeIssuer:
    """One local HTTP server acting as several providers under /<provider>/."""

    def __init__(self) -> None:
        self.state: dict[str, ProviderState] = {p: ProviderState() for p in PROVIDERS}
        self.base_url = ""
        self.app = web.Application()
        self.app.router.add_get("/{provider}/.well-known/openid-configuration", self._discovery)
        self.app.router.add_get("/{provider}/jwks", self._jwks)

    def issuer(self, provider: str) -> str:
        return f"{self.base_url}/{provider}"

    def jwks_uri(self, provider: str) -> str:
        return f"{self.base_url}/{provider}/jwks"

    def well_known(self, provider: str) -> str:
        return f"{self.base_url}/{provider}/.well-known/openid-configuration"

    def publish(self, provider: str, *jwks: dict[str, Any]) -> None:
        self.state[provider].keys = list(jwks)

    async def _discovery(self, request: web.Request) -> web.Response:
        name = request.match_info["provider"]
        self.state[name].discovery_fetches += 1
        return web.json_response(
            {
                "issuer": self.issuer(name),
                "jwks_uri": self.jwks_uri(name),
                "token_endpoint": f"{self.issuer(name)}/token",
                **self.state[name].discovery,
            }
        )

    async def _jwks(self, request: web.Request) -> web.StreamResponse:
        state = self.state[request.match_info["provider"]]
        state.jwks_fetches += 1
        if state.mode == "down":
            return web.Response(status=503, text="unavailable")
        if state.mode == "not_modified":  # whatever the request: a broken server or proxy
            return web.Response(status=304)
        if state.mode == "garbage":
            return web.Response(body=b"<html>not a key set", content_type="text/html")
        if state.mode == "hang":
            await asyncio.sleep(state.hang_seconds)
        if state.mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        keys = [] if state.mode == "empty" else state.keys
        if state.mode == "enc_only":
            keys = [{**k, "use": "enc"} for k in state.keys]
        body = json.dumps({"keys": keys}).encode()
        headers = {}
        if state.cache_control:
            headers["Cache-Control"] = state.cache_control
        if state.etag:
            tag = f'"{hash(body) & 0xFFFFFFFF:x}"'
            headers["ETag"] = tag
            if request.headers.get("If-None-Match") == tag:
                state.jwks_304 += 1
                return web.Response(status=304, headers=headers)
        return web.Response(body=body, headers=headers, content_type=state.content_type)


def environment(
    issuer: FakeIssuer, providers: tuple[str, ...] = PROVIDERS, *, discovery: bool = False, **extra: str
) -> dict[str, str]:
    """The NAIS variables that point texas at the fake issuer."""
    env: dict[str, str] = {}
    for p in providers:
        prefix = PREFIX[p]
        env[f"{prefix}_ENABLED"] = "true"
        if p in AUDIENCE_VARIABLE:
            env[AUDIENCE_VARIABLE[p]] = AUDIENCES[p]  # type: ignore[assignment]
        if discovery:
            env["AZURE_APP_WELL_KNOWN_URL" if p == "azuread" else f"{prefix}_WELL_KNOWN_URL"] = (
                issuer.well_known(p)
            )
        elif p == "azuread":
            env["AZURE_OPENID_CONFIG_ISSUER"] = issuer.issuer(p)
            env["AZURE_OPENID_CONFIG_JWKS_URI"] = issuer.jwks_uri(p)
        else:
            env[f"{prefix}_ISSUER"] = issuer.issuer(p)
            env[f"{prefix}_JWKS_URI"] = issuer.jwks_uri(p)
    env.update(extra)
    return env


# --- texas under gunicorn ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Gunicorn:
    """A gunicorn master started by a test, its output in files, its metrics in a folder."""

    process: subprocess.Popen[bytes]
    url: str
    out: Path
    err: Path
    metrics_dir: Path

    def lines(self) -> list[str]:
        return [line for line in self.out.read_text().splitlines() if line.strip()]

    def stderr(self) -> str:
        return self.err.read_text()

    def booted(self) -> list[int]:
        return [int(m) for m in re.findall(r"Booting worker with pid: (\d+)", self.out.read_text())]

    def ready_workers(self) -> int:
        """Workers whose app finished start-up (each logs one line per provider)."""
        return sum('enabled: keys loaded"' in line for line in self.lines()) // len(PROVIDERS)

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"gunicorn exited while waiting for {what}:\n{self.tail()}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s:\n{self.tail()}"
            await asyncio.sleep(0.05)

    def tail(self) -> str:
        return "\n".join(self.lines()[-15:]) + "\n" + self.stderr()[-2000:]


def gunicorn_env(tmp_path: Path, **env: str) -> dict[str, str]:
    metrics = tmp_path / "metrics"
    metrics.mkdir(exist_ok=True)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TEXAS_", "OTEL_", "PROMETHEUS_"))}
    return {
        **keep,
        "WEB_CONCURRENCY": str(WORKERS),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        **env,
    }


@contextlib.contextmanager
def spawn(tmp_path: Path, env: dict[str, str]) -> Iterator[Gunicorn]:
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with out.open("wb") as o, err.open("wb") as e:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(GUNICORN_CONF.relative_to(ROOT)),
                "texas.app:create_app_from_env",
            ],
            cwd=ROOT,
            env=env,
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield Gunicorn(
            process,
            f"http://{env.get('BIND_ADDRESS', '')}",
            out,
            err,
            Path(env["PROMETHEUS_MULTIPROC_DIR"]),
        )
    finally:
        if process.poll() is None:  # a failed test: take down the master and its workers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@contextlib.asynccontextmanager
async def running_gunicorn(tmp_path: Path, environ: Mapping[str, str]) -> AsyncIterator[Gunicorn]:
    """gunicorn with WORKERS workers and `environ` (BIND_ADDRESS included), once every worker
    has loaded the keys of all four providers."""
    with spawn(tmp_path, gunicorn_env(tmp_path, **environ)) as g:
        await g.wait_for(lambda: g.ready_workers() >= WORKERS, f"{WORKERS} ready workers")
        yield g


def _probably_prime(n: int, rng: random.Random) -> bool:
    """Miller-Rabin with 32 random bases: enough for test keys."""
    if n < 4 or n % 2 == 0:
        return n in (2, 3)
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(32):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


@functools.cache
def roca_key() -> RSAKey:
    """A 2048-bit RSA key built the way Infineon's RSALib built them (CVE-2017-15361): each
    prime is k * M + (65537^a mod M), M the product of the primes up to 167."""
    rng = random.Random(15361)
    primes = [p for p in range(2, 168) if all(p % d for d in range(2, math.isqrt(p) + 1))]
    m = math.prod(primes)

    def prime() -> int:
        while True:
            candidate = rng.getrandbits(1025 - m.bit_length()) * m + pow(65537, rng.getrandbits(64), m)
            # the top two bits set, so that two such primes make a 2048-bit modulus
            if candidate >> 1022 == 3 and _probably_prime(candidate, rng):
                return candidate

    p, q = prime(), prime()
    assert (p * q).bit_length() == 2048
    e = 65537
    d = pow(e, -1, (p - 1) * (q - 1))
    public = rsa.RSAPublicNumbers(e, p * q)
    crt = (rsa.rsa_crt_dmp1(d, p), rsa.rsa_crt_dmq1(d, q), rsa.rsa_crt_iqmp(p, q))
    numbers = rsa.RSAPrivateNumbers(p, q, d, *crt, public)
    return RSAKey.import_key(numbers.private_key())


class Clock:
    """A clock the test moves by hand (wall or monotonic, as the code under test reads it)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

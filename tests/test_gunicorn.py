"""texas under gunicorn with two workers, as deployed: `gunicorn -c deploy/gunicorn.conf.py
texas.app:create_app_from_env`, against the fake issuer on this machine.

What issue 4 says it will be checked by: drive valid, invalid and unknown-kid traffic over
several connections, then read /metrics: every series present and the counts summed across
workers exactly; logs parse as JSON line by line with no token or pid; SIGTERM under load loses
no request and gunicorn exits 0. Also: a dead worker's live gauges leave the sums, and a bad
configuration stops gunicorn instead of restarting workers forever.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    GUNICORN_CONF,
    PROVIDERS,
    WORKERS,
    FakeIssuer,
    Gunicorn,
    claims_for,
    environment,
    free_port,
    gunicorn_env,
    make_key,
    running_gunicorn,
    sign,
    spawn,
)
from texas.ops import telemetry

PID = "29017612345"
INTROSPECT = "/api/v1/introspect"

pytestmark = pytest.mark.skipif(
    not GUNICORN_CONF.exists(), reason="deploy/gunicorn.conf.py is not written yet"
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Outcome = tuple[str, str]  # (provider, outcome): the labels of texas_introspections_total


@contextlib.asynccontextmanager
async def running(tmp_path: Path, issuer: FakeIssuer, **env: str) -> AsyncIterator[Gunicorn]:
    address = f"127.0.0.1:{free_port()}"
    environ = environment(issuer, BIND_ADDRESS=address, TEXAS_ACCESS_LOG="true", **env)
    async with running_gunicorn(tmp_path, environ) as g:
        yield g


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as r:
        assert r.status == 200
        text = await r.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def introspections_by_worker(metrics_dir: Path) -> dict[int, float]:
    """Introspections each worker counted: its own counter file read alone."""
    counts: dict[int, float] = {}
    for path in metrics_dir.glob("counter_*.db"):
        alone = metrics_dir.parent / f"alone-{path.stem}"
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(alone))
        counts[int(path.stem.split("_")[1])] = sum(
            s.value
            for f in registry.collect()
            if f.name == "texas_introspections"
            for s in f.samples
            if s.name == "texas_introspections_total"
        )
        shutil.rmtree(alone)
    return counts


# --- traffic -----------------------------------------------------------------------------------


@dataclass
class Plan:
    """Requests to send, each with the verdict it must get, and every secret they carry."""

    requests: list[tuple[dict[str, str], Outcome]] = field(default_factory=list)
    secrets: set[str] = field(default_factory=set)

    def add(
        self,
        fields: dict[str, str],
        expected: Outcome,
        times: int,
        claims: dict[str, Any] | None = None,
    ) -> None:
        self.requests += [(fields, expected)] * times
        token = fields["token"]
        self.secrets |= {token, *(part for part in token.split(".") if len(part) >= 6)}
        for name, v in (claims or {}).items():
            # iss, aud and idp (a provider name) are configuration, which texas logs at start-up
            if name not in ("iss", "aud", "idp") and isinstance(v, str) and len(v) >= 6:
                self.secrets.add(v)

    def expected(self) -> collections.Counter[Outcome]:
        return collections.Counter(outcome for _, outcome in self.requests)


def make_plan(issuer: FakeIssuer, total: int = 300) -> Plan:
    plan = Plan()
    now = time.time()

    def claims(provider: str, **kw: Any) -> dict[str, Any]:
        return claims_for(
            provider,
            issuer.issuer(provider),
            now,
            **({"pid": PID} if provider in ("idporten", "tokenx") else {}),
            sub=f"sub-{uuid.uuid4()}",
            jti=f"jti-{uuid.uuid4()}",
            **kw,
        )

    key = make_key("RS256", "key-1")
    for provider, share in (
        ("idporten", 0.3),
        ("azuread", 0.1),
        ("tokenx", 0.1),
        ("maskinporten", 0.1),
    ):
        c = claims(provider)
        plan.add(
            {"identity_provider": provider, "token": sign(c, key)},
            (provider, "active"),
            int(total * share),
            c,
        )
    c = claims("idporten")
    plan.add(
        {"identity_provider": "idporten", "token": sign(c, make_key("RS256", "attacker"))},
        ("idporten", "bad_signature"),
        total // 10,
        c,
    )
    c = claims("idporten", exp=int(now) - 3600)
    plan.add(
        {"identity_provider": "idporten", "token": sign(c, key)},
        ("idporten", "expired"),
        total // 10,
        c,
    )
    c = claims("tokenx")
    plan.add(
        {
            "identity_provider": "tokenx",
            "token": sign(c, make_key("RS256", "key-unknown"), kid="key-unknown"),
        },
        ("tokenx", "unknown_key"),
        total // 10,
        c,
    )
    plan.add(
        {"identity_provider": "azuread", "token": "not-a-jwt"},
        ("azuread", "malformed"),
        total // 20,
    )
    plan.add(
        {"identity_provider": "keycloak", "token": "x.y.z"},
        ("none", "unknown_provider"),
        total - len(plan.requests),
    )
    random.Random(4).shuffle(plan.requests)  # interleave the kinds, the same way each run
    return plan


async def send(session: aiohttp.ClientSession, url: str, fields: dict[str, str], expected: Outcome) -> None:
    async with session.post(f"{url}{INTROSPECT}", json=fields) as r:
        assert r.status == 200
        answer = await r.json()
    assert (answer["active"] and "active") or answer["reason"] == expected[1], (answer, expected)


async def drive(url: str, plan: Plan, keepalive_connections: int = 6) -> None:
    """Half the requests over a few keep-alive connections, half on a new connection each, so
    that both workers accept connections and serve."""
    lanes: list[list[tuple[dict[str, str], Outcome]]] = [[] for _ in range(keepalive_connections + 2)]
    for i, request in enumerate(plan.requests):
        lanes[i % len(lanes)].append(request)

    async def lane(requests: list[tuple[dict[str, str], Outcome]], fresh: bool) -> None:
        connector = aiohttp.TCPConnector(limit=1, force_close=fresh)
        async with aiohttp.ClientSession(connector=connector) as session:
            for fields, expected in requests:
                await send(session, url, fields, expected)

    await asyncio.gather(
        *(lane(requests, fresh=i >= keepalive_connections) for i, requests in enumerate(lanes))
    )


def assert_json_lines(lines: list[str], secrets: set[str]) -> list[dict[str, Any]]:
    entries = []
    for line in lines:
        entry = json.loads(line)
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        for secret in secrets | {PID}:
            assert secret not in line, f"{secret[:20]}... logged: {line[:300]}"
        assert '"pid"' not in line
        entries.append(entry)
    return entries


# --- the tests ---------------------------------------------------------------------------------


async def test_metrics_are_summed_across_workers_and_logs_are_clean(
    tmp_path: Path, issuer: FakeIssuer
) -> None:
    plan = make_plan(issuer)
    async with running(tmp_path, issuer, TEXAS_JWKS_MIN_REFRESH_SECONDS="60") as g:
        started = time.time()
        await drive(g.url, plan)
        after = await scrape(g.url)

        # introspections: every request counted once, by provider and outcome, whichever worker
        counted = {
            (dict(k)["provider"], dict(k)["outcome"]): v
            for k, v in series(after, "texas_introspections_total").items()
        }
        assert counted == plan.expected()
        assert sum(counted.values()) == len(plan.requests) == 300
        per_worker = introspections_by_worker(g.metrics_dir)
        assert sum(per_worker.values()) == 300
        assert len([n for n in per_worker.values() if n > 0]) == WORKERS, per_worker

        # latency histogram and responses by route, summed
        assert value(after, "texas_http_request_duration_seconds_count", route=INTROSPECT) == 300
        assert value(after, "texas_http_request_duration_seconds_bucket", route=INTROSPECT, le="+Inf") == 300
        assert value(after, "texas_http_responses_total", route=INTROSPECT, code="200") == 300

        # JWKS: one start-up fetch per worker and provider, and no other fetch
        for p in PROVIDERS:
            assert (
                value(after, "texas_jwks_fetches_total", provider=p, trigger="startup", result="200")
                == WORKERS
            )
            assert issuer.state[p].jwks_fetches == WORKERS
            assert value(after, "texas_jwks_keys", provider=p) == 1
            assert (
                started - 30
                < value(after, "texas_jwks_last_success_timestamp_seconds", provider=p)
                <= time.time()
            )
            assert 0 <= value(after, telemetry.STALENESS_NAME, provider=p) < 30
        assert sum(series(after, "texas_jwks_fetches_total").values()) == WORKERS * len(PROVIDERS)

        # in flight: just this scrape; token cache: one lookup per request that named a provider
        assert value(after, "texas_http_requests_in_flight") == 1
        lookups = series(after, "texas_token_cache_lookups_total")
        named = sum(n for (provider, _), n in plan.expected().items() if provider != "none")
        assert sum(lookups.values()) == named
        assert 1 <= value(after, "texas_token_cache_entries") <= WORKERS * 4  # four valid tokens

        # a worker dies: gunicorn starts another; its live gauges leave, its counts stay
        dead = g.booted()[0]
        os.kill(dead, signal.SIGKILL)
        await g.wait_for(
            lambda: len(g.booted()) == WORKERS + 1 and g.ready_workers() == WORKERS + 1,
            "a replacement worker",
        )
        files = os.listdir(g.metrics_dir)
        assert not [f for f in files if f.startswith("gauge_live") and f.endswith(f"_{dead}.db")], files
        assert f"counter_{dead}.db" in files or per_worker.get(dead, 0) == 0
        again = await scrape(g.url)
        assert sum(series(again, "texas_introspections_total").values()) == 300
        assert value(again, "texas_http_requests_in_flight") == 1
        for p in PROVIDERS:
            assert value(again, "texas_jwks_keys", provider=p) == 1
            assert (
                value(again, "texas_jwks_fetches_total", provider=p, trigger="startup", result="200")
                == WORKERS + 1
            )

        g.process.send_signal(signal.SIGTERM)
        assert g.process.wait(30) == 0

    entries = assert_json_lines(g.lines(), plan.secrets)
    access = [e for e in entries if e["logger"] == "texas.access" and e["path"] == INTROSPECT]
    assert len(access) == 300
    assert all(e["method"] == "POST" and e["status"] == 200 and e["request_id"] for e in access)
    assert len({e["request_id"] for e in access}) == 300, "request ids are unique across workers"
    workers = {str(pid) for pid in g.booted()}
    left = [
        f
        for f in os.listdir(g.metrics_dir)
        if f.startswith("gauge_live") and f.removesuffix(".db").rsplit("_", 1)[1] in workers
    ]
    assert not left, "every worker that exited left the live sums"


async def test_sigterm_under_load_loses_no_request(tmp_path: Path, issuer: FakeIssuer) -> None:
    """Keep-alive and new connections busy, and requests whose body is still arriving when the
    signal comes: every request sent before SIGTERM is answered 200, and gunicorn exits 0."""
    plan = make_plan(issuer, total=60)
    stop, signalled = asyncio.Event(), asyncio.Event()
    results: list[tuple[SimpleNamespace, int | BaseException]] = []
    slow_records: list[SimpleNamespace] = []
    signalled_at = 0.0

    async def headers_sent(session: Any, ctx: SimpleNamespace, params: Any) -> None:
        ctx.trace_request_ctx.sent = time.monotonic()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(headers_sent)

    async def post(session: aiohttp.ClientSession, url: str, data: Any) -> None:
        record = SimpleNamespace(started=time.monotonic(), sent=None, slow=not isinstance(data, bytes))
        if record.slow:
            slow_records.append(record)
        try:
            async with session.post(
                f"{url}{INTROSPECT}",
                data=data,
                trace_request_ctx=record,
                headers={"Content-Type": "application/json"},
            ) as r:
                answer = await r.json()
                assert "active" in answer
                record.done = time.monotonic()
                results.append((record, r.status))
        except (aiohttp.ClientError, AssertionError) as e:
            results.append((record, e))

    async def busy(url: str, fresh: bool) -> None:
        connector = aiohttp.TCPConnector(limit=1, force_close=fresh)
        async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
            i = 0
            while not stop.is_set():
                fields, _ = plan.requests[i % len(plan.requests)]
                await post(session, url, json.dumps(fields).encode())
                i += 1

    async def slow(url: str, fields: dict[str, str]) -> None:
        body = json.dumps(fields).encode()

        async def trickle() -> AsyncIterator[bytes]:
            yield body[:10]
            await signalled.wait()  # the rest of the body arrives after the signal
            yield body[10:]

        async with aiohttp.ClientSession(trace_configs=[trace]) as session:
            await post(session, url, trickle())

    async with running(tmp_path, issuer) as g:
        tasks = [asyncio.create_task(busy(g.url, fresh=i >= 4)) for i in range(6)]
        tasks += [asyncio.create_task(slow(g.url, plan.requests[i][0])) for i in range(4)]
        # Signal once the slow requests are in flight and the busy ones have done some work:
        # waited for, not slept for, so that a busy machine only makes the test slower.
        deadline = time.monotonic() + 30
        while len(results) <= 50 or sum(1 for r in slow_records if r.sent is not None) < 4:
            assert time.monotonic() < deadline, "the load did not get going"
            await asyncio.sleep(0.05)
        stop.set()
        signalled_at = time.monotonic()
        g.process.send_signal(signal.SIGTERM)
        signalled.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        code = await asyncio.to_thread(g.process.wait, 30)

    before = [(r, outcome) for r, outcome in results if r.started < signalled_at]
    lost = [(r, outcome) for r, outcome in before if outcome != 200]
    assert len(before) > 50, len(before)
    assert not lost, f"{len(lost)} of {len(before)} requests sent before SIGTERM were lost: {lost[:3]}"
    in_flight = [r for r, _ in before if r.slow and r.sent < signalled_at < r.done]
    assert len(in_flight) == 4, "the slow requests were in flight when the signal came"
    assert code == 0, g.tail()
    assert_json_lines(g.lines(), plan.secrets)


BAD = {
    "IDPORTEN_ENABLED": "true",
    "IDPORTEN_ISSUER": "http://127.0.0.1:9/idporten",
    "IDPORTEN_JWKS_URI": "http://127.0.0.1:9/idporten/jwks",
}  # and no IDPORTEN_AUDIENCE


def run_with_bad_configuration(tmp_path: Path) -> tuple[int, Gunicorn, float]:
    env = gunicorn_env(tmp_path, BIND_ADDRESS=f"127.0.0.1:{free_port()}", **BAD)
    started = time.monotonic()
    with spawn(tmp_path, env) as g:
        code = g.process.wait(60)
    return code, g, time.monotonic() - started


def test_a_bad_configuration_stops_gunicorn_naming_the_variable(tmp_path: Path) -> None:
    """Not a loop of workers failing to boot: gunicorn stops, non-zero, and says why."""
    code, g, seconds = run_with_bad_configuration(tmp_path)
    assert code != 0
    assert "IDPORTEN_AUDIENCE" in g.stderr() + g.out.read_text()
    assert seconds < 30


def test_a_bad_configuration_is_one_line_before_any_worker_starts(tmp_path: Path) -> None:
    code, g, _ = run_with_bad_configuration(tmp_path)
    assert code != 0
    lines = [line for line in (g.stderr() + g.out.read_text()).splitlines() if "IDPORTEN_AUDIENCE" in line]
    assert len(lines) == 1, lines
    assert "Traceback" not in g.stderr() + g.out.read_text()
    assert g.booted() == []

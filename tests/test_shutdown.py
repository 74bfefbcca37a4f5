"""`texas serve` as a process: SIGTERM stops accepting, answers what was already received and
exits 0; PROBE_BIND_ADDRESS serves the probes and metrics, and nothing else.

The slow request is a real one: a token with an unknown kid makes texas fetch the JWKS, and
the fake issuer holds that fetch for a while, so the request is still waiting on it when the
signal arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support import FakeIssuer, claims_for, environment, make_key, sign

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Texas:
    process: subprocess.Popen[bytes]
    url: str
    out: Path

    def lines(self) -> list[str]:
        return [line for line in self.out.read_text().splitlines() if line.strip()]

    async def exit_code(self, timeout: float = 15) -> int:
        return await asyncio.to_thread(self.process.wait, timeout)


@contextlib.asynccontextmanager
async def texas_serve(tmp_path: Path, issuer: FakeIssuer, **env: str) -> AsyncIterator[Texas]:
    """`python -m texas serve` against the fake issuer, ready (every provider holds keys)."""
    port = free_port()
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TEXAS_", "OTEL_", "PROMETHEUS_"))}
    full = {**keep, **environment(issuer, BIND_ADDRESS=f"127.0.0.1:{port}", **env)}
    out = tmp_path / "texas.log"
    with out.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "texas", "serve"],
            cwd=ROOT,
            env=full,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    texas = Texas(process, f"http://127.0.0.1:{port}", out)
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, out.read_text()
                assert time.monotonic() < deadline, out.read_text()
                with contextlib.suppress(aiohttp.ClientConnectionError):
                    async with session.get(f"{texas.url}/readyz") as r:
                        if r.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield texas
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):  # reset: caught in the closing backlog
        return True
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return False


def assert_json_lines(lines: list[str], *secrets: str) -> list[dict[str, Any]]:
    entries = [json.loads(line) for line in lines]
    for line, entry in zip(lines, entries, strict=True):
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        for secret in secrets:
            assert secret not in line, line
    return entries


async def test_sigterm_answers_the_request_in_flight_and_refuses_new_connections(
    tmp_path: Path, issuer: FakeIssuer
) -> None:
    async with texas_serve(
        tmp_path, issuer, TEXAS_JWKS_FETCH_TIMEOUT_SECONDS="10", TEXAS_JWKS_MIN_REFRESH_SECONDS="0.2"
    ) as texas:
        await asyncio.sleep(0.3)  # past the refresh window of the start-up fetch
        state = issuer.state["idporten"]
        # the fetch hangs long enough that a busy machine still refuses new connections first
        state.mode, state.hang_seconds = "hang", 5
        fetches = state.jwks_fetches
        token = sign(
            claims_for("idporten", issuer.issuer("idporten")),
            make_key("RS256", "key-new"),
            kid="key-new",
        )

        async def slow_request() -> tuple[int, dict[str, Any]]:
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    f"{texas.url}/api/v1/introspect",
                    json={"identity_provider": "idporten", "token": token},
                ) as r,
            ):
                return r.status, await r.json()

        slow = asyncio.create_task(slow_request())
        while state.jwks_fetches == fetches:  # the request now waits on the fetch
            await asyncio.sleep(0.01)
        texas.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        port = int(texas.url.rsplit(":", 1)[1])
        while not await refused(port):
            assert time.monotonic() - signalled < 4.0, "still accepting seconds after SIGTERM"
            await asyncio.sleep(0.02)
        assert not slow.done(), "new connections are refused while the request is still in flight"

        status, answer = await slow
        assert time.monotonic() - signalled > 1.0, "the answer waited for the fetch"
        assert status == 200 and answer["active"] is False and answer["reason"] == "unknown_key"
        assert await texas.exit_code() == 0

    entries = assert_json_lines(texas.lines(), token, *token.split("."))
    messages = [e["message"] for e in entries]
    assert any(m.startswith("shutting down") for m in messages), messages
    assert messages[-1] == "texas stopped"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_an_idle_service_stops_at_once_and_exits_0(
    tmp_path: Path, issuer: FakeIssuer, sig: signal.Signals
) -> None:
    async with texas_serve(tmp_path, issuer) as texas:
        texas.process.send_signal(sig)
        started = time.monotonic()
        assert await texas.exit_code() == 0
        assert time.monotonic() - started < 5
    assert_json_lines(texas.lines())


async def test_probe_address_serves_probes_and_metrics_only(tmp_path: Path, issuer: FakeIssuer) -> None:
    probe = f"http://127.0.0.1:{free_port()}"
    async with texas_serve(tmp_path, issuer, PROBE_BIND_ADDRESS=probe.removeprefix("http://")) as texas:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{texas.url}/api/v1/introspect", json={}) as r:
                assert (await r.json())["reason"] == "bad_request"
            async with session.get(f"{probe}/healthz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ok"
            async with session.get(f"{probe}/readyz") as r:
                assert r.status == 200 and (await r.json())["status"] == "ready"
            async with session.get(f"{probe}/metrics") as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                text = await r.text()
            # the same process-wide counters as on the API address
            assert 'texas_introspections_total{outcome="bad_request",provider="none"} 1.0' in text
            for method in ("POST", "GET"):
                async with session.request(method, f"{probe}/api/v1/introspect", json={"token": "x"}) as r:
                    assert r.status == 404
        texas.process.send_signal(signal.SIGTERM)
        assert await texas.exit_code() == 0
    assert_json_lines(texas.lines())

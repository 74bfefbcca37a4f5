"""Logs: one JSON object a line, with request ids and an access line per request, and never a
token, a token segment, a `pid` or any claim value, whatever the request carries.

The service runs as `texas serve` runs it (`server.serve`: the real runner and access logger)
on a free local port, against the fake issuer, with logging configured as the CLI does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import sys
import time
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.support import FakeIssuer, claims_for, environment, make_key, sign
from texas import server
from texas.config import Config
from texas.errors import ConfigError
from texas.ops import logs

REQUIRED = ("time", "level", "logger", "message")
RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
PID = "29017612345"  # distinct from every other number in the logs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`logs.configure` changes process-wide state: put it back for the tests after this one."""
    root = logging.getLogger()
    saved = [(name, logging.getLogger(name).level) for name in ("aiohttp", "texas.access")]
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, saved_level in saved:
        logging.getLogger(name).setLevel(saved_level)
    logging.captureWarnings(False)


@contextlib.asynccontextmanager
async def serving(issuer: FakeIssuer, **env: str) -> AsyncIterator[str]:
    """texas as `texas serve` runs it, configured from `env` like the CLI; yields its URL."""
    env = {"TEXAS_ACCESS_LOG": "true", **env}
    config = Config.from_env(environment(issuer, BIND_ADDRESS=f"127.0.0.1:{free_port()}", **env))
    logs.configure(config.log_level, config.log_format)
    stop = asyncio.Event()
    task = asyncio.create_task(server.serve(config, stop=stop))
    url = f"http://{config.bind_address}"
    async with aiohttp.ClientSession() as session:
        deadline = time.monotonic() + 30  # generous: a busy machine starts slowly
        while True:
            with contextlib.suppress(aiohttp.ClientConnectionError):
                async with session.get(f"{url}/healthz") as r:
                    if r.status == 200:
                        break
            assert not task.done(), task
            assert time.monotonic() < deadline, "the service did not start"
            await asyncio.sleep(0.02)
    try:
        yield url
    finally:
        stop.set()
        await task


def read_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    sys.stdout.flush()
    return [line for line in capsys.readouterr().out.splitlines() if line.strip()]


def parse(lines: list[str]) -> list[dict[str, Any]]:
    entries = []
    for line in lines:
        entry = json.loads(line)  # every line, not just most
        assert isinstance(entry, dict), line
        for key in REQUIRED:
            assert key in entry, f"{key} missing in {line}"
        entries.append(entry)
    return entries


def secrets_of(token: str, claims: dict[str, Any]) -> set[str]:
    """Strings that must never appear in a log line: the token, each of its segments, and
    every string claim value (issuer and audience are configuration, logged at start-up)."""
    found = {token, *token.split(".")}

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.add(value)
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)

    walk({k: v for k, v in claims.items() if k not in ("iss", "aud")})
    return {s for s in found if len(s) >= 6}


def assert_no_secret(lines: list[str], secrets: set[str]) -> None:
    for line in lines:
        for secret in secrets:
            assert secret not in line, f"{secret[:24]}... logged: {line[:300]}"
        assert '"pid"' not in line, line


@pytest.fixture
def claims(issuer: FakeIssuer) -> dict[str, Any]:
    return claims_for(
        "idporten",
        issuer.issuer("idporten"),
        pid=PID,
        sub=f"sub-{uuid.uuid4()}",
        jti=f"jti-{uuid.uuid4()}",
        client_id="client-secret-looking-id",
        note={"nested": f"nested-{uuid.uuid4()}"},
        amr=["Minid-otc"],
    )


async def drive(url: str, token: str, forged: str) -> list[tuple[str, str, int, str]]:
    """The requests of the test: (method, path as sent, status, request id answered)."""
    sent: list[tuple[str, str, int, str]] = []
    async with aiohttp.ClientSession() as session:

        async def call(method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
            async with session.request(method, f"{url}{path}", **kwargs) as r:
                body = await r.read()
                sent.append((method, path, r.status, r.headers.get("X-Request-Id")))
                return json.loads(body) if r.content_type == "application/json" else None

        introspect = "/api/v1/introspect"
        fields = {"identity_provider": "idporten", "token": token}
        valid = await call("POST", introspect, json=fields)
        assert valid is not None and valid["active"] is True
        again = await call("POST", introspect, json=fields)
        assert again is not None and again["active"] is True  # from the token cache
        bad = await call("POST", introspect, json={**fields, "token": forged})
        assert bad is not None and bad["reason"] == "bad_signature"
        unreadable = await call(
            "POST",
            introspect,
            data=b'{"token": "' + token.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert unreadable is not None and unreadable["reason"] == "bad_request"
        form = await call("POST", introspect, data=fields)
        assert form is not None and form["active"] is True
        query = f"?identity_provider=idporten&token={token}"
        in_query = await call("POST", introspect + query, data={"identity_provider": "idporten"})
        assert in_query is not None and in_query["reason"] == "bad_request"
        await call("GET", f"/healthz{query}")
        await call("GET", f"/{token.split('.')[1]}")  # a made-up path: 404, never logged as such
        await call("GET", introspect)  # 405
        await call("POST", introspect, json=fields, headers={"X-Request-Id": token.split(".")[0]})
        await call("POST", introspect, json=fields, headers={"X-Request-Id": "caller-id-42"})
    return sent


async def test_every_line_is_json_with_no_token_segment_pid_or_claim_value(
    issuer: FakeIssuer, claims: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    token = sign(claims, make_key("RS256", "key-1"))
    forged = sign(claims, make_key("RS256", "attacker"))
    async with serving(issuer, LOG_LEVEL="DEBUG") as url:
        await drive(url, token, forged)
    lines = read_lines(capsys)
    entries = parse(lines)
    assert len(entries) > 12
    assert_no_secret(lines, secrets_of(token, claims) | secrets_of(forged, claims))
    for entry in entries:
        assert entry["level"] in ("debug", "info", "warning", "error", "critical")
        assert re.fullmatch(RFC3339, entry["time"]), entry["time"]
        with contextlib.suppress(KeyError):
            assert "?" not in entry["path"]


async def test_one_access_line_per_request_with_its_request_id(
    issuer: FakeIssuer, claims: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    token = sign(claims, make_key("RS256", "key-1"))
    forged = sign(claims, make_key("RS256", "attacker"))
    async with serving(issuer, LOG_LEVEL="DEBUG") as url:
        sent = await drive(url, token, forged)
    ids = {rid for *_, rid in sent}
    access = [
        e for e in parse(read_lines(capsys)) if e["logger"] == "texas.access" and e["request_id"] in ids
    ]  # not the start-up polls
    assert [(e["method"], e["status"], e["request_id"]) for e in access] == [
        (method, status, rid) for method, _, status, rid in sent
    ]
    paths = [e["path"] for e in access]
    assert (
        paths
        == ["/api/v1/introspect"] * 6
        + ["/healthz", "other", "/api/v1/introspect"]
        + ["/api/v1/introspect"] * 2
    )
    for e in access:
        assert isinstance(e["duration_ms"], float) and e["duration_ms"] >= 0
        assert e["message"] == f"{e['method']} {e['path']} {e['status']}"
    assert access[-1]["request_id"] == "caller-id-42", "a caller's id is kept"
    assert access[-2]["request_id"] != token.split(".")[0], "a token segment is no request id"
    assert {e["level"] for e in access if e["path"] == "/healthz"} == {"debug"}


async def test_lines_logged_inside_a_request_carry_its_request_id(
    issuer: FakeIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown kid makes the request fetch the JWKS; the fetch fails and says so, on a line
    that names the request it was made for."""
    claims = claims_for("idporten", issuer.issuer("idporten"))
    stranger = sign(claims, make_key("RS256", "key-new"), kid="key-new")
    async with serving(issuer, TEXAS_JWKS_MIN_REFRESH_SECONDS="0.001") as url:
        issuer.state["idporten"].mode = "down"
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{url}/api/v1/introspect",
                headers={"X-Request-Id": "req-unknown-kid"},
                json={"identity_provider": "idporten", "token": stranger},
            ) as r,
        ):
            assert (await r.json())["reason"] == "unknown_key"
    entries = parse(read_lines(capsys))
    failures = [e for e in entries if e["logger"] == "texas.introspection.jwks" and e["level"] == "warning"]
    assert failures, entries
    assert {e.get("request_id") for e in failures} == {"req-unknown-kid"}
    startup = [e for e in entries if e["logger"] == "texas.app"]
    assert startup and all("request_id" not in e for e in startup)


async def test_log_level_warning_leaves_out_access_lines(
    issuer: FakeIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with (
        serving(issuer, LOG_LEVEL="WARNING") as url,
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v1/introspect", json={"token": "x"}) as r,
    ):
        assert r.status == 200
    assert [e for e in parse(read_lines(capsys)) if e["level"] in ("debug", "info")] == []


async def test_text_format_is_for_people_and_still_keeps_secrets_out(
    issuer: FakeIssuer, claims: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    token = sign(claims, make_key("RS256", "key-1"))
    fields = {"identity_provider": "idporten", "token": token}
    async with (
        serving(issuer, LOG_FORMAT="text") as url,
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/v1/introspect", data=fields, headers={"X-Request-Id": "text-42"}) as r,
    ):
        assert (await r.json())["active"] is True
    lines = read_lines(capsys)
    assert lines and not any(line.startswith("{") for line in lines)
    assert any(
        "INFO" in line and "texas.access: POST /api/v1/introspect 200 [text-42]" in line for line in lines
    ), lines
    assert_no_secret(lines, secrets_of(token, claims))


def test_bad_log_settings_stop_start_up_naming_the_variable(issuer: FakeIssuer) -> None:
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        Config.from_env(environment(issuer, LOG_FORMAT="yaml"))
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        Config.from_env(environment(issuer, LOG_LEVEL="loud"))


@pytest.mark.parametrize(
    ("header", "kept"),
    [
        ("0b7e6d1c-6f1a-4c6e-9d43-3c2f8f0e4a11", True),
        ("4bf92f3577b34da6a3ce929d0e0e4736", True),
        ("caller:span-7.1", True),
        ("eyJhbGciOiJSUzI1NiJ9", False),
        ("a" * 65, False),
        ("has space", False),
        ('quote"d', False),
        ("", False),
        (None, False),
    ],
    ids=[
        "uuid",
        "trace-id",
        "punctuation",
        "jwt-segment",
        "too-long",
        "space",
        "quote",
        "empty",
        "absent",
    ],
)
def test_an_incoming_request_id_is_kept_only_when_it_looks_like_one(header: str | None, kept: bool) -> None:
    rid = logs.accept_request_id(header)
    assert (rid == header) is kept
    assert logs.accept_request_id(None) != rid


def _record(exc: BaseException) -> logging.LogRecord:
    try:
        raise exc
    except BaseException:
        return logging.LogRecord(
            "texas.app", logging.ERROR, __file__, 1, "unexpected error", (), sys.exc_info()
        )


def test_an_exception_is_logged_with_its_type_and_frames_but_not_its_message() -> None:
    """A library's message may quote its input (a token, a claim); texas's own messages are
    sentences it wrote, and stay."""
    secret, value = "eyJzZWNyZXQiOiJ0b2tlbiJ9", PID
    try:
        try:
            raise KeyError(secret)
        except KeyError as inner:
            raise ValueError(f"bad value {value}") from inner
    except ValueError:
        record = logging.LogRecord(
            "texas.app", logging.ERROR, __file__, 1, "unexpected error", (), sys.exc_info()
        )
    for formatter in (logs.JsonFormatter(), logs.TextFormatter()):
        line = formatter.format(record)
        assert "builtins.ValueError" in line and "builtins.KeyError" in line
        assert "test_an_exception_is_logged" in line  # the frames
        assert PID not in line and "eyJzZWNyZXQ" not in line
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "unexpected error" and "exception" in entry
    assert "IDPORTEN_AUDIENCE" in logs.JsonFormatter().format(
        _record(ConfigError("IDPORTEN_ENABLED=true needs IDPORTEN_AUDIENCE"))
    )


def test_a_json_line_is_one_line_whatever_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    logging.getLogger("texas.test").info('two\nlines and a "quote"', extra={"count": 3})
    (line,) = read_lines(capsys)
    entry = json.loads(line)
    assert entry["message"] == 'two\nlines and a "quote"' and entry["count"] == 3
    assert entry["logger"] == "texas.test" and entry["level"] == "info"
    assert "request_id" not in entry


def test_warnings_become_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library is unhappy", UserWarning, stacklevel=1)
    (line,) = read_lines(capsys)
    entry = json.loads(line)
    assert entry["logger"] == "py.warnings" and "a library is unhappy" in entry["message"]


def test_time_is_rfc3339_utc(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    logging.getLogger("texas.test").info("now")
    (line,) = read_lines(capsys)
    assert re.fullmatch(RFC3339, json.loads(line)["time"])


def test_a_forked_worker_draws_its_own_request_ids() -> None:
    """gunicorn forks its workers: two of them must never hand out the same id."""
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe and leaves
        os.write(write, logs.accept_request_id(None).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 100).decode()
    os.close(read)
    ours = logs.accept_request_id(None)
    assert theirs.split("-")[0] != ours.split("-")[0]


async def test_access_log_is_off_unless_asked_for(
    issuer: FakeIssuer, capsys: pytest.CaptureFixture[str]
) -> None:
    async with serving(issuer, TEXAS_ACCESS_LOG="false") as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/readyz") as r:
            assert r.status == 200
        async with session.post(f"{url}/api/v1/introspect", json={"token": "x.y.z"}) as r:
            assert r.status == 200
    assert not [line for line in capsys.readouterr().out.splitlines() if '"texas.access"' in line]

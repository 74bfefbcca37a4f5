"""The servers under test: how each is started, checked, measured and stopped.

Every target gets the same environment (texas's own variable names), the same JWKS server and
the same CPU set, and is started fresh for each measured run, so one run's cache or heap never
carries into the next and `VmHWM` is the peak of that run alone.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
GUNICORN_CONF = Path("deploy") / "gunicorn.conf.py"  # relative to REPO_ROOT
NAMES = ("texas", "ceiling", "verify", "pyjwt", "node")
# The ceiling never reads the token, so reusing tokens cannot flatter it.
VALIDATES = {"texas": True, "ceiling": False, "verify": True, "pyjwt": True, "node": True}
NODE_DIR = BENCH_DIR / "node"
# Inherited variables that would change what a target does (other providers, tracing, ...).
DROPPED_PREFIXES = (
    "IDPORTEN_",
    "MASKINPORTEN_",
    "AZURE_",
    "TOKEN_X_",
    "TEXAS_",
    "OTEL_",
    "BIND_ADDRESS",
    "PROBE_BIND_ADDRESS",
    "WEB_CONCURRENCY",
    "PROMETHEUS_MULTIPROC_DIR",
    "GUNICORN_CMD_ARGS",
)
CACHE_LOOKUPS = re.compile(
    r'^texas_token_cache_lookups_total\{[^}]*result="(\w+)"[^}]*\} (\S+)$', re.MULTILINE
)


class TargetError(Exception):
    """A target could not be measured (did not start, not ready, wrong verdicts, died)."""


@dataclass(frozen=True)
class Setup:
    """What all targets share in one benchmark."""

    issuer: str
    audience: str
    jwks_uri: str
    secrets_dir: Path  # empty: no NAIS secret files are read
    log_dir: Path
    server_cpus: frozenset[int] | None
    gunicorn_workers: int  # 0: one plain process
    wrapper: tuple[str, ...] = ()  # a command that runs the target, e.g. valgrind


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(setup: Setup, port: int) -> dict[str, str]:
    """The environment every target starts with (texas reads it; the others copy it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(DROPPED_PREFIXES)}
    env.update(
        BIND_ADDRESS=f"127.0.0.1:{port}",
        IDPORTEN_ENABLED="true",
        IDPORTEN_ISSUER=setup.issuer,
        IDPORTEN_JWKS_URI=setup.jwks_uri,
        IDPORTEN_AUDIENCE=setup.audience,
        TEXAS_SECRETS_DIR=str(setup.secrets_dir),
    )
    if setup.gunicorn_workers:
        env["WEB_CONCURRENCY"] = str(setup.gunicorn_workers)
    return env


def aiohttp_worker_class() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "aiohttp.GunicornWebWorker"
    return "aiohttp.GunicornUVLoopWebWorker"


def command(name: str, setup: Setup, port: int) -> list[str]:
    """The command line of a target, run from the repository root."""
    python = sys.executable
    workers = setup.gunicorn_workers
    if name == "node":
        # One process, or node:cluster with WEB_CONCURRENCY workers (environment() sets it).
        return [shutil.which("node") or "node", str(NODE_DIR / "server.mjs")]
    if name == "texas" and not workers:
        return [python, "-m", "texas", "serve"]
    if name == "texas" and (REPO_ROOT / GUNICORN_CONF).exists():
        # The deployed configuration; -b only pins the port the harness chose.
        conf = str(GUNICORN_CONF)
        return [
            python,
            "-m",
            "gunicorn",
            "-c",
            conf,
            "texas.app:create_app_from_env",
            "-b",
            f"127.0.0.1:{port}",
        ]
    if name == "texas":
        # deploy/ not there yet: the same worker class, configured on the command line.
        app, path = "texas.app:create_app_from_env", []
    else:
        module = {"ceiling": "ceiling", "verify": "verify_bound", "pyjwt": "pyjwt_baseline"}[name]
        if not workers:
            return [python, str(BENCH_DIR / f"{module}.py")]
        app = f"{module}:create_app_from_env"
        path = ["--pythonpath", str(BENCH_DIR.relative_to(REPO_ROOT))]
    return [
        python,
        "-m",
        "gunicorn",
        *path,
        app,
        "--worker-class",
        aiohttp_worker_class(),
        "-w",
        str(workers),
        "-b",
        f"127.0.0.1:{port}",
    ]


class Target:
    """One running server process (or gunicorn master and its workers)."""

    def __init__(self, name: str, setup: Setup, label: str) -> None:
        self.name = name
        self.setup = setup
        self.port = free_port()
        self.argv = [*setup.wrapper, *command(name, setup, self.port)]
        self.log_path = setup.log_dir / f"{label}.log"
        cpus = setup.server_cpus

        def pin() -> None:
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=environment(setup, self.port),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=pin,
                start_new_session=True,
            )

    # -- lifecycle -----------------------------------------------------------------------

    def wait_ready(self, timeout: float) -> None:
        """Until GET /readyz answers 200 (and every gunicorn worker is up)."""
        deadline = time.monotonic() + timeout
        want = self.setup.gunicorn_workers
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise TargetError(
                    f"{self.name} exited with code {self.proc.returncode} before it was "
                    f"ready.{self.log_tail()}"
                )
            status = self._status("/readyz")
            if status == 200 and (not want or len(self.workers()) >= want):
                return
            time.sleep(0.1)
        raise TargetError(f"{self.name} was not ready within {timeout:.0f} s.{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, as an orchestrator would; SIGKILL the session if it does not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        if not text:
            return ""
        shown = "\n    ".join(text[-lines:])
        return f"\n  command: {' '.join(self.argv)}\n  last lines of its output:\n    {shown}"

    # -- HTTP ----------------------------------------------------------------------------

    def _status(self, path: str) -> int | None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            try:
                conn.request("GET", path)
                return conn.getresponse().status
            finally:
                conn.close()
        except OSError:
            return None

    def introspect(self, body: bytes) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", "/api/v1/introspect", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {}
        return response.status, answer if isinstance(answer, dict) else {}

    def check_verdicts(self, valid: Sequence[bytes], forged: bytes) -> None:
        """Valid tokens must be active and (for validating targets) a forged one inactive.

        Only `active`, `reason` and `error` are ever shown: the answer's other fields are the
        token's claims, which are never printed.
        """
        for body in valid:
            status, answer = self.introspect(body)
            if status != 200 or answer.get("active") is not True:
                raise TargetError(
                    f"{self.name} did not accept a valid token: HTTP {status}, "
                    f"{_verdict(answer)}.{self.log_tail(5)}"
                )
        if VALIDATES[self.name]:
            status, answer = self.introspect(forged)
            if answer.get("active") is not False:
                raise TargetError(
                    f"{self.name} did not reject a token with a bad signature: HTTP {status}, "
                    f"{_verdict(answer)}."
                )

    def cache_lookups(self) -> dict[str, float] | None:
        """texas's verified-token cache lookups so far by result, from /metrics.

        Evidence for the workloads: during a `new` run every lookup must be a miss.
        None for the other targets, or when the metric is not there.
        """
        if self.name != "texas":
            return None
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            try:
                conn.request("GET", "/metrics")
                text = conn.getresponse().read().decode(errors="replace")
            finally:
                conn.close()
        except OSError:
            return None
        found = {m.group(1): float(m.group(2)) for m in CACHE_LOOKUPS.finditer(text)}
        return found or None

    # -- resources -----------------------------------------------------------------------

    def workers(self) -> list[int]:
        """PIDs of the processes that serve: gunicorn's workers, or the process itself."""
        if not self.setup.gunicorn_workers:
            return [self.proc.pid]
        return children(self.proc.pid)

    def peak_rss_kib(self) -> tuple[int, int] | None:
        """(sum, max) of VmHWM over the serving processes, in KiB; None without /proc."""
        peaks = [p for p in (vm_hwm_kib(pid) for pid in self.workers()) if p is not None]
        return (sum(peaks), max(peaks)) if peaks else None

    def cpu_ticks(self) -> int | None:
        """utime + stime of the serving processes and the master, in clock ticks."""
        pids = {self.proc.pid, *self.workers()}
        ticks = [t for t in (proc_cpu_ticks(pid) for pid in pids) if t is not None]
        return sum(ticks) if ticks else None


def _verdict(answer: Mapping[str, Any]) -> str:
    shown = {k: answer[k] for k in ("active", "reason", "error") if k in answer}
    return json.dumps(shown) if shown else "no JSON verdict"


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) comes after the parenthesised command name.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def vm_hwm_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def proc_cpu_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime, stime

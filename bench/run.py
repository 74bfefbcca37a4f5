"""The texas benchmark, in one command:

    python bench/run.py [--duration 5] [--rounds 5] [--gunicorn-workers N]

It mints RS256 ID-porten-shaped tokens, serves their key from a local JWKS server, and measures
texas, the ceiling (aiohttp answering a constant) and a PyJWT baseline, each started fresh as
its own process for each run, pinned to the same CPU, driven by wrk on another CPU over two
workloads: tokens seen before, and every token new. Rounds are interleaved with the target
order rotated, so drift of the machine spreads over all targets. See bench/README.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

import report
import targets
from targets import BENCH_DIR, REPO_ROOT, Setup, Target, TargetError
from tokens import (
    AUDIENCE,
    ISSUER,
    KID,
    LIFETIME_SECONDS,
    TokenSpec,
    check_valid,
    mint,
    new_key_pem,
)

LUA = BENCH_DIR / "introspect.lua"
EXAMPLE_PATH = (
    "paths",
    "/api/v1/introspect",
    "post",
    "requestBody",
    "content",
    "application/json",
    "examples",
    "idporten",
    "value",
)
WORKLOADS = ("seen", "new")
# Upper bound on req/s one validating worker can reach on a fast core: sizes the token pool.
RATE_BOUND = 16_000
# Never fewer distinct `new` tokens than this: four times texas's default cache of 10,000, so
# no cache of any target can turn "new" into "seen".
MIN_NEW_TOKENS = 40_000


@dataclass(frozen=True)
class Bodies:
    """The request bodies of one benchmark, written once and shared by every target."""

    files: dict[str, Path]  # workload -> one JSON body per line
    probe: bytes  # a valid token in no workload file, for the pre-run check
    forged: bytes  # the probe with its signature changed
    source: str  # where the body shape came from
    token_bytes: int
    pool: int


# -- setup -------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/run.py",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Benchmark texas against an aiohttp ceiling and a PyJWT baseline.",
    )
    p.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    p.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument(
        "--targets",
        default="texas,ceiling,verify,pyjwt,node",
        help="comma list of texas, ceiling, verify, pyjwt, node (the ceiling is always added)",
    )
    p.add_argument("--workloads", default="seen,new", help="comma list of seen, new")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument(
        "--gunicorn-workers",
        default="0",
        metavar="N[,N...]",
        help="run every target under gunicorn with N workers (texas with deploy/, node with "
        "node:cluster); a comma list such as 1,2 measures each, interleaved; 0: one plain process",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=0,
        help="size of the 'new' token pool (default: duration x 16000 x workers)",
    )
    p.add_argument("--seen-tokens", type=int, default=8, help="distinct tokens cycled in the 'seen' workload")
    p.add_argument("--server-cpus", help="CPU list for the targets, e.g. 0 or 0-3")
    p.add_argument("--wrk-cpus", help="CPU list for wrk (and this script, the JWKS server)")
    p.add_argument("--wrk-threads", type=int, default=0, help="default: one per wrk CPU, max 4")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="niceness for the targets, wrk and the JWKS server; negative (as root) keeps "
        "other work on a shared machine from disturbing the runs",
    )
    p.add_argument("--start-timeout", type=float, default=30, help="seconds to /readyz 200")
    p.add_argument(
        "--openapi",
        type=Path,
        default=REPO_ROOT / "openapi.yaml",
        help="contract whose idporten request example gives the body shape",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=BENCH_DIR / "results",
        help="where latest.json and latest.png go",
    )
    args = p.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.workloads = [w for w in args.workloads.split(",") if w]
    try:
        args.gunicorn_workers = [int(n) for n in str(args.gunicorn_workers).split(",") if n]
    except ValueError:
        p.error("--gunicorn-workers takes a number or a comma list of numbers")
    if not args.gunicorn_workers or min(args.gunicorn_workers) < 0:
        p.error("--gunicorn-workers takes numbers from 0 up")
    unknown = set(args.targets) - set(targets.NAMES) | set(args.workloads) - set(WORKLOADS)
    if min(args.duration, args.rounds, args.connections) < 1 or args.warmup < 0:
        p.error("--duration, --rounds and --connections must be at least 1")
    if unknown:
        p.error(f"unknown target or workload: {', '.join(sorted(unknown))}")
    if "ceiling" not in args.targets:
        args.targets.append("ceiling")  # every ratio is to the ceiling of the same round
    per_run = args.duration + args.warmup + 3  # start, checks, stop
    runs = args.rounds * len(args.targets) * len(args.workloads) * len(args.gunicorn_workers)
    if runs * per_run > 0.9 * LIFETIME_SECONDS:
        p.error("that many rounds would outlive the tokens (valid 1 h): use fewer or shorter")
    return args


def ensure_wrk() -> str:
    """wrk's path; installs the Debian package when missing and allowed to."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it with `apt-get install -y wrk`", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "wrk"]
        if subprocess.run(install, env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], env=env)
            subprocess.run(install, env=env)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit(
        "wrk (the load generator) is not installed. Install it and run again:\n"
        "  Debian/Ubuntu: sudo apt-get install -y wrk\n"
        "  macOS: brew install wrk\n"
        "(run as root, this script installs the Debian package itself)"
    )


def ensure_node_packages() -> None:
    """The Node peer's packages, installed from its lock file with `npm ci` when missing."""
    node_dir = targets.NODE_DIR
    if (node_dir / "node_modules" / "jose").is_dir():
        return
    if shutil.which("node") is None or shutil.which("npm") is None:
        sys.exit("the node target needs Node.js 20 or later and npm (or leave it out: --targets texas,pyjwt)")
    print("installing the Node peer's packages: npm ci in bench/node", flush=True)
    if subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=node_dir).returncode != 0:
        sys.exit("npm ci failed in bench/node")


def check_packages() -> None:
    """Fail before minting and measuring, not after, when a needed package is missing."""
    needed = {"yaml": "pyyaml", "matplotlib": "matplotlib", "jwt": "PyJWT[crypto]"}
    missing = [pip for module, pip in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        sys.exit(
            f"missing Python packages: {', '.join(missing)}\n"
            f"  pip install -e '.[bench]' {' '.join(repr(m) for m in missing)}"
        )


def cpu_list(text: str) -> frozenset[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return frozenset(cpus)


def plan_cpus(
    args: argparse.Namespace, workers: int
) -> tuple[frozenset[int] | None, frozenset[int] | None, str]:
    """(server CPUs, wrk CPUs, a sentence saying how they were chosen)."""
    if not hasattr(os, "sched_setaffinity"):
        return None, None, "no CPU pinning on this system"
    available = sorted(os.sched_getaffinity(0))
    need = max(1, workers)
    if len(available) > need:
        server, load = frozenset(available[:need]), frozenset(available[need:])
    else:
        server = load = frozenset(available)
    if args.server_cpus:
        server = cpu_list(args.server_cpus)
    if args.wrk_cpus:
        load = cpu_list(args.wrk_cpus)
    shared = "sharing CPUs with the targets" if server & load else "on its own CPUs"
    note = f"targets on CPU {fmt_cpus(server)}, wrk on CPU {fmt_cpus(load)} ({shared})"
    return server, load, note


def fmt_cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def body_template(path: Path) -> tuple[dict[str, Any], str]:
    """The ID-porten request example published in openapi.yaml (its token gets replaced)."""
    import yaml

    where = f"{path.name}: " + ".".join(EXAMPLE_PATH)
    try:
        node: Any = yaml.safe_load(path.read_text())
        for key in EXAMPLE_PATH:
            node = node[key]
    except FileNotFoundError:
        why = f"{path} does not exist"
    except (KeyError, TypeError, yaml.YAMLError) as error:
        why = f"{where} is missing or unreadable ({type(error).__name__})"
    else:
        if isinstance(node, dict) and "token" in node:
            return dict(node), where
        why = f"{where} is not an object with a `token` field"
    print(f"WARNING: {why}; using the built-in body shape instead", flush=True)
    return {"identity_provider": "idporten", "token": ""}, f"built-in ({why})"


def forge(token: str) -> str:
    """The same token with one signature character changed: a bad signature."""
    head, payload, sig = token.split(".")
    mid = len(sig) // 2
    sig = sig[:mid] + ("A" if sig[mid] != "A" else "B") + sig[mid + 1 :]
    return f"{head}.{payload}.{sig}"


def write_bodies(args: argparse.Namespace, spec: TokenSpec, tmp: Path, workers: int) -> Bodies:
    template, source = body_template(args.openapi)
    pool = args.tokens or max(MIN_NEW_TOKENS, int(args.duration * RATE_BOUND * max(1, workers)))
    seen_count = max(1, args.seen_tokens)
    total = pool + seen_count + 1
    started = time.monotonic()
    print(f"minting {total} RS256 tokens on {os.cpu_count()} CPUs ...", end=" ", flush=True)
    minted = mint(spec, total)
    print(f"{time.monotonic() - started:.1f} s", flush=True)
    check_valid([minted[0], minted[-1]], spec)

    def body(token: str) -> bytes:
        return orjson.dumps({**template, "token": token})

    files = {"new": tmp / "new.bodies", "seen": tmp / "seen.bodies"}
    with files["new"].open("wb") as f:
        f.writelines(body(t) + b"\n" for t in minted[:pool])
    with files["seen"].open("wb") as f:
        f.writelines(body(t) + b"\n" for t in minted[pool : pool + seen_count])
    probe = minted[-1]
    return Bodies(files, body(probe), body(forge(probe)), source, len(probe), pool)


def start_jwks(key_path: Path, log_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(BENCH_DIR / "jwks_server.py"),
            "--key",
            str(key_path),
            "--kid",
            KID,
            "--issuer",
            ISSUER,
        ],
        stdout=subprocess.PIPE,
        stderr=(log_dir / "jwks.log").open("wb"),
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    match = re.match(r"listening on (\S+)", line)
    if not match:
        proc.kill()
        sys.exit(f"the JWKS server did not start; see {log_dir / 'jwks.log'}")
    return proc, match.group(1) + "/jwks"


# -- one run -----------------------------------------------------------------------------


def wrk(
    binary: str, args: argparse.Namespace, threads: int, port: int, bodies: Path, seconds: int
) -> dict[str, Any]:
    argv = [
        binary,
        "-t",
        str(threads),
        "-c",
        str(args.connections),
        "-d",
        f"{seconds:g}s",
        "--timeout",
        "5s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}/api/v1/introspect",
        "--",
        str(bodies),
        str(threads),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    for line in done.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            return result
    raise SystemExit(f"wrk failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")


def machine_ticks() -> tuple[int, int] | None:
    """(busy, steal) clock ticks of the whole machine so far, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle, iowait
    return sum(fields[:8]) - idle, fields[7]


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(
    name: str,
    workload: str,
    rnd: int,
    setup: Setup,
    bodies: Bodies,
    wrk_bin: str,
    wrk_threads: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Start a fresh target, check its verdicts, warm it up, measure it, stop it."""
    target = Target(name, setup, label=f"round{rnd + 1}-{workload}-{name}")
    try:
        target.wait_ready(args.start_timeout)
        seen_first = bodies.files["seen"].read_bytes().split(b"\n", 1)[0]
        target.check_verdicts([bodies.probe, seen_first], bodies.forged)
        if args.warmup > 0:  # with seen tokens only: the 'new' pool stays unseen
            wrk(wrk_bin, args, wrk_threads, target.port, bodies.files["seen"], args.warmup)
        cache0 = target.cache_lookups()
        cpu0, all0, wrk0 = target.cpu_ticks(), machine_ticks(), children_cpu_seconds()
        t0 = time.monotonic()
        result = wrk(wrk_bin, args, wrk_threads, target.port, bodies.files[workload], args.duration)
        t1 = time.monotonic()
        cpu1, all1, wrk1 = target.cpu_ticks(), machine_ticks(), children_cpu_seconds()
        rss = target.peak_rss_kib()
        cache1 = target.cache_lookups()
        if not target.alive():
            raise TargetError(f"{name} died during the run.{target.log_tail()}")
    finally:
        target.stop()
    seconds = result["duration_us"] / 1e6
    requests = result["requests"]
    tick = os.sysconf("SC_CLK_TCK")
    run: dict[str, Any] = {
        "round": rnd + 1,
        "workload": workload,
        "target": name,
        "rps": requests / seconds,
        "p50_ms": result["p50_us"] / 1000,
        "p90_ms": result["p90_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
        "response_bytes": result["bytes"] / requests if requests else None,  # with headers
        "rss_mib": rss[0] / 1024 if rss else None,
        "rss_worker_max_mib": rss[1] / 1024 if rss else None,
        "wrk": result,
    }
    wall = t1 - t0
    run["wrk_cpu_cores"] = (wrk1 - wrk0) / wall
    if cpu0 is not None and cpu1 is not None and requests:
        run["server_cpu_cores"] = (cpu1 - cpu0) / tick / wall
        run["cpu_us_per_req"] = (cpu1 - cpu0) / tick / requests * 1e6
        if all0 is not None and all1 is not None:
            # Whatever else ran on the machine meanwhile: the noise this run had to live with.
            busy = (all1[0] - all0[0]) / tick / wall
            run["other_cpu_cores"] = max(0.0, busy - run["server_cpu_cores"] - run["wrk_cpu_cores"])
            run["steal_cpu_cores"] = (all1[1] - all0[1]) / tick / wall
    if cache0 is not None and cache1 is not None:
        run["cache_lookups"] = {k: v - cache0.get(k, 0.0) for k, v in cache1.items()}
    run["why"] = why_invalid(name, workload, result, bodies)
    run["valid"] = run["why"] is None
    return run


def why_invalid(name: str, workload: str, result: dict[str, Any], bodies: Bodies) -> str | None:
    errors = sum(result["errors"].values())
    if errors:
        return f"wrk saw {errors} socket errors or timeouts: {result['errors']}"
    if result["inactive"]:
        return f"{result['inactive']} answers were not HTTP 200 with active: true"
    if workload == "new" and result["wrapped"] and targets.VALIDATES[name]:
        need = int(result["sent"] * 1.3)
        return (
            f"the token pool ({bodies.pool}) ran out after {result['sent']} requests, "
            f"so tokens were sent twice; run again with --tokens {need}"
        )
    return None


# -- the whole benchmark -----------------------------------------------------------------


def rotate(items: Sequence[str], by: int) -> list[str]:
    k = by % len(items)
    return [*items[k:], *items[:k]]


def machine(wrk_bin: str) -> dict[str, Any]:
    """What the figures depend on, recorded next to them."""
    model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    version = subprocess.run([wrk_bin, "--version"], capture_output=True, text=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "wrk": (version.stdout or version.stderr).strip().split("\n")[0] or None,
        "commit": commit.stdout.strip() if commit.returncode == 0 else None,
    }


def scrub(text: str, tmp: Path) -> str:
    """Messages kept in results/ name no machine paths."""
    return (
        text.replace(sys.executable, "python")
        .replace(f"{sys.base_prefix}/", "<python>/")
        .replace(str(tmp), "<tmp>")
        .replace(f"{REPO_ROOT}/", "")
        .replace(str(REPO_ROOT), ".")
    )


def progress(run: dict[str, Any], total: str) -> None:
    line = (
        f"{run['rps']:8.0f} req/s  p50 {run['p50_ms']:6.2f} ms  p99 {run['p99_ms']:6.2f} ms"
        f"  RSS {run['rss_mib'] or 0:5.1f} MiB"
    )
    if run.get("server_cpu_cores") is not None:
        line += f"  cores: server {run['server_cpu_cores']:.2f} wrk {run['wrk_cpu_cores']:.2f}"
    if run.get("other_cpu_cores") is not None:
        line += f" other {run['other_cpu_cores']:.2f}"
    if "cache_lookups" in run:
        hits, misses = (int(run["cache_lookups"].get(k, 0)) for k in ("hit", "miss"))
        line += f"  cache hit/miss {hits}/{misses}"
    if not run["valid"]:
        line += f"  LEFT OUT: {run['why']}"
    print(f"{total}{line}", flush=True)


@dataclass(frozen=True)
class Mode:
    """How every target is run in part of a benchmark: one process, or gunicorn with N workers."""

    workers: int  # 0: one plain process
    server_cpus: frozenset[int] | None
    wrk_cpus: frozenset[int] | None
    cpu_note: str
    wrk_threads: int

    @property
    def name(self) -> str:
        return f"gunicorn, {self.workers} workers" if self.workers else "one process"

    @property
    def key(self) -> str:
        return f"gunicorn-{self.workers}" if self.workers else "process"


def plan_modes(args: argparse.Namespace) -> list[Mode]:
    modes = []
    for workers in args.gunicorn_workers:
        server, load, note = plan_cpus(args, workers)
        threads = args.wrk_threads or max(1, min(len(load or [0]), 4, args.connections))
        modes.append(Mode(workers, server, load, note, threads))
    return modes


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    check_packages()
    wrk_bin = ensure_wrk()
    if "node" in args.targets:
        ensure_node_packages()
    modes = plan_modes(args)
    command = "python bench/run.py" + "".join(f" {shlex.quote(a)}" for a in (argv or sys.argv[1:]))
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    for mode in modes:
        print(
            f"texas benchmark: {mode.name} per target; {mode.cpu_note}; {args.connections} connections; "
            f"{args.rounds} rounds x {args.duration:g} s (+{args.warmup:g} s warm-up)",
            flush=True,
        )

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load > 0.5:
        print(
            f"note: the machine is busy (load average {load:.1f}); other work shares the CPUs "
            "and makes the figures noisier (see 'other' cores per run)",
            flush=True,
        )
    runs: dict[str, list[dict[str, Any]]] = {mode.key: [] for mode in modes}
    failures: dict[str, dict[str, str]] = {mode.key: {} for mode in modes}
    with tempfile.TemporaryDirectory(prefix="texas-bench-") as tmp_name:
        tmp = Path(tmp_name)
        key_path = tmp / "key.pem"
        key_path.write_bytes(new_key_pem())
        spec = TokenSpec(key_pem=key_path.read_bytes())
        most = max(mode.workers for mode in modes)
        bodies = write_bodies(args, spec, tmp, most)  # on every CPU
        if modes[0].wrk_cpus is not None:
            os.sched_setaffinity(0, modes[0].wrk_cpus)  # this script and the JWKS server
        if args.nice:
            try:
                os.nice(args.nice)  # inherited by every process started from here on
            except OSError as error:
                print(f"WARNING: --nice {args.nice} not applied ({error.strerror})", flush=True)
        (tmp / "secrets").mkdir()
        jwks, jwks_uri = start_jwks(key_path, tmp)
        setups = {
            mode.key: Setup(ISSUER, AUDIENCE, jwks_uri, tmp / "secrets", tmp, mode.server_cpus, mode.workers)
            for mode in modes
        }
        try:
            for rnd in range(args.rounds):
                for mode in modes:
                    if mode.wrk_cpus is not None:
                        os.sched_setaffinity(0, mode.wrk_cpus)  # wrk inherits it
                    failed = failures[mode.key]
                    for workload in rotate(args.workloads, rnd):
                        for name in rotate(args.targets, rnd):
                            if name in failed:
                                continue
                            where = f" {mode.key}" if len(modes) > 1 else ""
                            head = f"[round {rnd + 1}/{args.rounds}{where}] {workload:4} {name:8}"
                            try:
                                run = measure(
                                    name,
                                    workload,
                                    rnd,
                                    setups[mode.key],
                                    bodies,
                                    wrk_bin,
                                    mode.wrk_threads,
                                    args,
                                )
                            except TargetError as error:
                                failed[name] = scrub(str(error), tmp)
                                print(f"{head} FAILED: {error}", flush=True)
                                continue
                            run["workers"] = mode.workers
                            runs[mode.key].append(run)
                            progress(run, head)
        finally:
            jwks.terminate()
            jwks.wait()

    ordered = [t for t in targets.NAMES if t in args.targets]
    summaries = {}
    for mode in modes:
        summaries[mode.key] = summary = report.summarise(runs[mode.key], ordered, args.workloads)
        invalid = [r for r in runs[mode.key] if not r["valid"]]
        print(f"\n== {mode.name} per target; {mode.cpu_note}")
        print(report.table(summary, ordered, failures[mode.key], invalid))
    if len(modes) > 1:
        print(scaling(summaries, modes, ordered, args.workloads))
    print(f"\nrequest bodies from {bodies.source}; tokens {bodies.token_bytes} bytes, RS256")

    every_run = [r for mode in modes for r in runs[mode.key]]
    results = {
        "command": command,
        "started": started_at,
        "machine": machine(wrk_bin),
        "conditions": {
            "modes": [
                {"mode": m.name, "workers": m.workers, "cpus": m.cpu_note, "wrk_threads": m.wrk_threads}
                for m in modes
            ],
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "token_pool": bodies.pool,
            "seen_tokens": args.seen_tokens,
            "token_bytes": bodies.token_bytes,
            "body_source": bodies.source,
            "load_average_at_start": load,
            "nice": args.nice,
        },
        # One mode: the summary itself, as before; several: by mode ("process", "gunicorn-N").
        "summary": summaries[modes[0].key] if len(modes) == 1 else summaries,
        "failures": failures[modes[0].key] if len(modes) == 1 else failures,
        "runs": every_run,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    charts = []
    for index, mode in enumerate(modes):
        note = mode.cpu_note
        others = [r["other_cpu_cores"] for r in runs[mode.key] if r.get("other_cpu_cores") is not None]
        if others:
            note += f"; other work used median {statistics.median(others):.2f} cores"
        title = (
            f"texas benchmark: {mode.name}, {args.connections} connections, "
            f"{args.rounds} x {args.duration:g} s; median, whiskers min-max, "
            f"labels = ratio to ceiling\n{note}\n{started_at}  {command}"
        )
        path = args.out / ("latest.png" if index == 0 else f"latest-{mode.key}.png")
        report.chart(summaries[mode.key], ordered, title, path)
        charts.append(str(path))
    print(f"wrote {args.out / 'latest.json'} and {', '.join(charts)}")
    return 1 if any(failures.values()) or not every_run else 0


def scaling(
    summaries: dict[str, dict[str, Any]],
    modes: Sequence[Mode],
    ordered: Sequence[str],
    workloads: Sequence[str],
) -> str:
    """req/s per target and workload side by side for each worker count: scaling per core."""
    lines = ["", "req/s by worker count (median over rounds)"]
    lines.append(f"  {'workload':8} {'target':8} " + " ".join(f"{m.key:>12}" for m in modes))
    for workload in workloads:
        for target in ordered:
            cells = []
            for mode in modes:
                entry = summaries[mode.key].get(workload, {}).get(target)
                rps = entry.get("rps") if entry else None
                cells.append(f"{rps['median']:12.0f}" if rps else f"{'-':>12}")
            lines.append(f"  {workload:8} {target:8} " + " ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

"""CPU instructions per request, counted by callgrind: the figure a noisy machine cannot move.

    python bench/instructions.py [--requests 2000] [--targets texas,ceiling]

Each target runs as its own process under `valgrind --tool=callgrind --instr-atstart=no`, so
start-up runs uninstrumented. For each workload (`seen`, `new`) a fresh process is started;
this script, a separate process that valgrind never sees, drives it over keep-alive
connections with raw sockets:

1. `new` only: fill the verified-token cache with more distinct tokens than it holds,
   uninstrumented, so every measured `new` request pays the eviction it pays in a long run;
2. `callgrind_control -i on`, then a warm-up batch (Python's adaptive interpreter and every
   lazy import settle);
3. `callgrind_control -z` (zero), the measured batch of N requests, `callgrind_control -d`
   (dump): the dump holds exactly the user-space instructions the server executed for those
   N requests (event loop, HTTP parsing, handler, response, garbage collection; the kernel's
   share of each syscall is not an instruction callgrind sees, and is the same for every
   target).

Instructions/request = the dump's total / N. To turn instructions into microseconds,
calibrate.py measures this machine's instructions per µs of interpreter work (texas's request
path without crypto, counted under callgrind and timed natively, best of 15) and one RS256
verify both ways: under valgrind OpenSSL cannot use the CPU's SHA and big-number extensions,
so the verify's instructions are worth much less time than the interpreter's. The estimate
above the ceiling is therefore (difference - one verify) / rate + the verify's native µs for
`new`, and difference / rate for `seen`. Only the instruction counts are stable; the µs are an
estimate. With --native, the same batches are also timed natively (server user CPU from
`/proc/PID/stat`), which a loaded machine disturbs by up to 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from calibrate import Calibration, calibrate
from run import body_template, cpu_list, start_jwks
from targets import REPO_ROOT, Setup, Target, TargetError
from tokens import TokenSpec, check_valid, mint, new_key_pem

WORKLOADS = ("seen", "new")
CACHE_ENTRIES = 10_000  # texas's default TEXAS_TOKEN_CACHE_SIZE: the fill exceeds it
WARMUP = 300
_SUMMARY = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Pools:
    seen: list[bytes]  # a few bodies, cycled
    fill: list[bytes]  # distinct tokens that push the cache past its bound
    new: list[bytes]  # distinct tokens for warm-up and measurement, never in `fill`


# -- the client: raw HTTP/1.1 over keep-alive sockets ----------------------------------------


async def _connection(port: int, bodies: Sequence[bytes]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    inactive = 0
    head = b"POST /api/v1/introspect HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    try:
        for body in bodies:
            writer.write(head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            headers = await reader.readuntil(b"\r\n\r\n")
            status = headers.split(b" ", 2)[1]
            match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", headers)
            if match is None:
                raise TargetError("an answer without Content-Length")
            answer = await reader.readexactly(int(match.group(1)))
            if status != b"200" or b'"active":true' not in answer:
                inactive += 1
    finally:
        writer.close()
    return inactive


def drive(port: int, bodies: Sequence[bytes], connections: int) -> None:
    """Send every body once, over `connections` concurrent keep-alive connections."""
    if not bodies:
        return
    shares = [bodies[k::connections] for k in range(connections)]

    async def all_of_them() -> int:
        return sum(await asyncio.gather(*(_connection(port, s) for s in shares if s)))

    inactive = asyncio.run(all_of_them())
    if inactive:
        raise TargetError(f"{inactive} of {len(bodies)} answers were not HTTP 200 with active: true")


# -- one measurement -------------------------------------------------------------------------


def callgrind_control(*args: str) -> None:
    done = subprocess.run(["callgrind_control", *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or "OK" not in done.stdout:
        raise TargetError(f"callgrind_control {' '.join(args)} failed: {done.stdout}{done.stderr}")


def user_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11])  # utime


def batches(pools: Pools, workload: str, requests: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(fill, warm-up, measured) bodies for one workload."""
    if workload == "seen":
        cycle = (requests + WARMUP) // len(pools.seen) + 1
        seen = (pools.seen * cycle)[: WARMUP + requests]
        return [], seen[:WARMUP], seen[WARMUP:]
    if WARMUP + requests > len(pools.new):
        raise SystemExit(f"only {len(pools.new)} new tokens for {WARMUP + requests} requests")
    return pools.fill, pools.new[:WARMUP], pools.new[WARMUP : WARMUP + requests]


def count(name: str, workload: str, setup: Setup, pools: Pools, args: argparse.Namespace) -> float:
    """Instructions per request of one target and workload, under callgrind."""
    out = setup.log_dir / f"callgrind.{name}.{workload}"
    wrapped = replace(
        setup,
        wrapper=(
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}.%p",
        ),
    )
    fill, warm, measured = batches(pools, workload, args.requests)
    target = Target(name, wrapped, label=f"callgrind-{workload}-{name}")
    try:
        target.wait_ready(args.start_timeout)
        drive(target.port, fill, args.connections)
        pid = str(target.proc.pid)
        callgrind_control("-i", "on", pid)
        drive(target.port, warm, args.connections)
        callgrind_control("-z", pid)
        drive(target.port, measured, args.connections)
        callgrind_control("-d", pid)
    finally:
        target.stop()
    dumps = sorted(setup.log_dir.glob(f"callgrind.{name}.{workload}.*.1"))
    if not dumps:
        raise TargetError(f"no callgrind dump for {name} {workload}")
    if args.keep:
        kept = args.keep / f"callgrind.{name}.{workload}.out"
        shutil.copy(dumps[-1], kept)
    found = _SUMMARY.search(dumps[-1].read_bytes())
    if found is None:
        raise TargetError(f"no instruction total in {dumps[-1].name}")
    return int(found.group(1)) / len(measured)


def user_us(name: str, workload: str, setup: Setup, pools: Pools, args: argparse.Namespace) -> float:
    """User CPU µs per request of one target and workload, natively (no valgrind)."""
    fill, warm, _ = batches(pools, workload, 0)
    if workload == "seen":
        measured = (pools.seen * (args.native_requests // len(pools.seen) + 1))[: args.native_requests]
    else:
        measured = pools.new[WARMUP : WARMUP + args.native_requests]
    target = Target(name, setup, label=f"native-{workload}-{name}")
    try:
        target.wait_ready(args.start_timeout)
        drive(target.port, fill, args.connections)
        drive(target.port, warm, args.connections)
        before = user_ticks(target.proc.pid)
        drive(target.port, measured, args.connections)
        after = user_ticks(target.proc.pid)
    finally:
        target.stop()
    return (after - before) / os.sysconf("SC_CLK_TCK") / len(measured) * 1e6


# -- the whole run -------------------------------------------------------------------------


@contextlib.contextmanager
def bench_setup(args: argparse.Namespace, prefix: str) -> Iterator[tuple[Path, Pools, Setup]]:
    """A scratch folder, tokens minted, this process moved to the client CPU, a JWKS server
    serving the key, and the Setup every target starts from; all gone on leaving."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp_name:
        tmp = Path(tmp_name)
        pools, spec, key_path = make_pools(args, tmp)
        os.sched_setaffinity(0, cpu_list(args.client_cpu))
        (tmp / "secrets").mkdir()
        jwks, jwks_uri = start_jwks(key_path, tmp)
        try:
            server_cpus = cpu_list(args.server_cpu)
            yield (
                tmp,
                pools,
                Setup(spec.issuer, spec.audience, jwks_uri, tmp / "secrets", tmp, server_cpus, 0),
            )
        finally:
            jwks.terminate()
            jwks.wait()


def make_pools(args: argparse.Namespace, tmp: Path) -> tuple[Pools, TokenSpec, Path]:
    template, _ = body_template(args.openapi)
    key_path = tmp / "key.pem"
    key_path.write_bytes(new_key_pem())
    spec = TokenSpec(key_pem=key_path.read_bytes())
    fill = args.fill
    new = WARMUP + max(args.requests, args.native_requests if args.native else 0)
    total = 8 + fill + new
    started = time.monotonic()
    print(f"minting {total} RS256 tokens ...", end=" ", flush=True)
    tokens = mint(spec, total)
    print(f"{time.monotonic() - started:.1f} s", flush=True)
    check_valid([tokens[0], tokens[-1]], spec)
    bodies = [orjson.dumps({**template, "token": t}) for t in tokens]
    return Pools(seen=bodies[:8], fill=bodies[8 : 8 + fill], new=bodies[8 + fill :]), spec, key_path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python bench/instructions.py",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Instructions per request (callgrind) for texas and the ceiling, seen and new tokens.",
    )
    p.add_argument("--targets", default="ceiling,texas", help="comma list of ceiling, texas, pyjwt")
    p.add_argument("--workloads", default="seen,new")
    p.add_argument("--requests", type=int, default=2000, help="measured requests under callgrind")
    p.add_argument("--connections", type=int, default=8, help="concurrent keep-alive connections")
    p.add_argument(
        "--fill",
        type=int,
        default=CACHE_ENTRIES + 500,
        help="distinct tokens sent (uninstrumented) before a `new` batch: fills texas's cache",
    )
    p.add_argument("--rate", type=float, help="instructions per µs to use instead of calibrating")
    p.add_argument("--verify-us", type=float, help="µs of one RS256 verify to use instead of calibrating")
    p.add_argument("--native", action="store_true", help="also time each batch natively (noisy)")
    p.add_argument(
        "--calibrate", action=argparse.BooleanOptionalAction, default=True, help="run calibrate.py for µs"
    )
    p.add_argument("--native-requests", type=int, default=20000, help="requests per native timing")
    p.add_argument("--server-cpu", default="0", help="CPU list the targets are pinned to")
    p.add_argument("--client-cpu", default="1", help="CPU list of this script and the JWKS server")
    p.add_argument(
        "--start-timeout", type=float, default=180, help="seconds to /readyz 200 (valgrind is slow)"
    )
    p.add_argument("--keep", type=Path, help="copy each callgrind dump into this directory")
    p.add_argument("--openapi", type=Path, default=REPO_ROOT / "openapi.yaml")
    args = p.parse_args(argv)
    args.targets = [t for t in args.targets.split(",") if t]
    args.workloads = [w for w in args.workloads.split(",") if w]
    if "ceiling" not in args.targets:
        args.targets.insert(0, "ceiling")
    if set(args.targets) - {"ceiling", "texas", "pyjwt"} or set(args.workloads) - set(WORKLOADS):
        p.error("targets: ceiling, texas, pyjwt; workloads: seen, new")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        sys.exit("valgrind is not installed (Debian/Ubuntu: apt-get install -y valgrind)")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    print(
        f"instructions per request: {args.requests} requests per batch over {args.connections} "
        f"connections; targets on CPU {args.server_cpu}; load average {load:.1f}",
        flush=True,
    )
    ir: dict[tuple[str, str], float] = {}
    us: dict[tuple[str, str], float] = {}
    with bench_setup(args, "texas-instructions-") as (_, pools, setup):
        for workload in args.workloads:
            for name in args.targets:
                started = time.monotonic()
                try:
                    ir[name, workload] = count(name, workload, setup, pools, args)
                    if args.native:
                        us[name, workload] = user_us(name, workload, setup, pools, args)
                except TargetError as error:
                    sys.exit(f"failed: {error}")
                line = f"{workload:4} {name:8} {ir[name, workload]:12,.0f} instructions/request"
                if args.native:
                    line += f"  {us[name, workload]:7.1f} µs user CPU/request (native)"
                print(f"{line}  ({time.monotonic() - started:.0f} s)", flush=True)
    calibration = None
    if args.calibrate:
        print("calibrating: instructions per µs, and one RS256 verify ...", flush=True)
        calibration = calibrate(skip_python=args.rate is not None, skip_verify_us=args.verify_us is not None)
        calibration = replace(
            calibration,
            python_us=calibration.python_ir / args.rate if args.rate else calibration.python_us,
            verify_us=args.verify_us or calibration.verify_us,
        )
        print(calibration.describe(), flush=True)
    print(report(ir, us, calibration, args))
    return 0


def report(
    ir: dict[tuple[str, str], float],
    us: dict[tuple[str, str], float],
    calibration: Calibration | None,
    args: argparse.Namespace,
) -> str:
    """The table: instructions per request, the difference to the ceiling, and in µs."""
    lines = ["", "above the ceiling: instructions, and µs estimated from the calibration"]
    head = f"{'workload':8} {'target':8} {'instr/req':>11} {'- ceiling':>11}"
    head += f" {'- 1 verify':>11} {'µs (est.)':>10}"
    if us:
        head += f" {'native µs':>10} {'- ceiling':>10}"
    lines.append(head)
    for workload in args.workloads:
        base = ir.get(("ceiling", workload))
        for name in args.targets:
            if (name, workload) not in ir or base is None:
                continue
            diff = ir[name, workload] - base
            row = f"{workload:8} {name:8} {ir[name, workload]:11,.0f} {diff:11,.0f}"
            verifies = workload == "new" and name != "ceiling"
            if calibration is not None and verifies:
                rest = diff - calibration.verify_ir
                estimate = calibration.verify_us + rest / calibration.rate
                row += f" {rest:11,.0f} {estimate:10.1f}"
            elif calibration is not None:
                row += f" {'':>11} {diff / calibration.rate:10.1f}"
            else:
                row += f" {'':>11} {'':>10}"
            if (name, workload) in us:
                native = us[name, workload]
                row += f" {native:10.1f} {native - us.get(('ceiling', workload), native):10.1f}"
            lines.append(row)
    if calibration is not None:
        lines.append(
            "µs (est.): seen, difference / rate; new, one verify's native µs + (difference - one "
            "verify) / rate"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())

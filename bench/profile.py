"""Where a target's CPU goes per request: py-spy samples under wrk load, summed by function.

    pip install py-spy        # into your own environment; not a dependency of texas
    python bench/profile.py [--target texas] [--workload new] [--seconds 20] [--native]

It starts the target natively (pinned like in run.py), fills its cache with more distinct
tokens than it holds when the workload is `new`, then samples it with py-spy while wrk drives
the workload. It prints, per function (file:function), the share of the target's samples
spent inside it (inclusive) and in it alone (self), and that share of the CPU µs per request
measured over the same window, so the list reads as "µs per request spent here". The raw
collapsed stacks are kept with --out for a flame graph (`flamegraph.pl` or speedscope).

Sampling costs the target a little (py-spy reads its memory from outside); the shares, not
the absolute µs, are the result. `--native` adds C frames (OpenSSL, orjson, the interpreter).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from instructions import Pools, bench_setup, drive
from run import ensure_wrk
from targets import BENCH_DIR, Setup, Target, proc_cpu_ticks

LUA = BENCH_DIR / "introspect.lua"
NEW_RATE_BOUND = 6_000  # new tokens per second one profiled worker can verify, with room
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*)\)$")


def short(frame: str) -> str:
    """`func (path/to/file.py)` as `file.py:func`, with the path from site-packages or the repo."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "lib/python3", "/texas/", "/bench/"):
        at = path.rfind(marker)
        if at >= 0:
            path = path[at + 1 :] if marker.startswith("/") else path[at + len(marker) :]
            break
    return f"{path}:{match['func']}"


def summarise(raw: Path) -> tuple[int, Counter[str], Counter[str]]:
    """(samples, inclusive samples by function, self samples by function) of collapsed stacks."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";")[1:]]  # [0] is the process/thread
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    return total, inclusive, own


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/profile.py", description=__doc__.split("\n")[0])
    p.add_argument("--target", default="texas", choices=["texas", "ceiling", "pyjwt"])
    p.add_argument("--workload", default="new", choices=["seen", "new"])
    p.add_argument("--seconds", type=int, default=20)
    p.add_argument("--rate", type=int, default=1000, help="py-spy samples per second")
    p.add_argument("--native", action="store_true", help="include C frames")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--out", type=Path, help="keep the collapsed stacks in this file")
    p.add_argument("--openapi", type=Path, default=BENCH_DIR.parent / "openapi.yaml")
    args = p.parse_args(argv)
    spy = shutil.which("py-spy")
    if spy is None:
        sys.exit("py-spy is not installed: pip install py-spy")
    wrk = ensure_wrk()
    # Enough new tokens for a profiled run (py-spy slows the target), after the cache fill; a
    # run that sends a token twice says so.
    args.fill = 10_500 if args.workload == "new" else 0
    args.requests = args.seconds * NEW_RATE_BOUND if args.workload == "new" else 0
    args.native_requests = 0
    with bench_setup(args, "texas-profile-") as (tmp, pools, setup):
        raw = args.out or tmp / "stacks.txt"
        total, inclusive, own, us = profile(args, setup, pools, tmp, raw, spy, wrk)
    print(f"{args.target} {args.workload}: {total} samples; {us:.1f} µs CPU per request during the run")
    print(f"\n{'incl %':>7} {'µs/req':>7}  function (inclusive)")
    for name, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:7.1f} {us * n / total:7.1f}  {name}")
    print(f"\n{'self %':>7} {'µs/req':>7}  function (self)")
    for name, n in own.most_common(args.top):
        print(f"{100 * n / total:7.1f} {us * n / total:7.1f}  {name}")
    return 0


def profile(
    args: argparse.Namespace, setup: Setup, pools: Pools, tmp: Path, raw: Path, spy: str, wrk: str
) -> tuple[int, Counter[str], Counter[str], float]:
    target = Target(args.target, setup, label=f"profile-{args.workload}-{args.target}")
    try:
        target.wait_ready(30)
        if args.workload == "new":
            drive(target.port, pools.fill, 8)
        bodies = tmp / "bodies"
        lines = pools.seen if args.workload == "seen" else pools.new
        bodies.write_bytes(b"".join(body + b"\n" for body in lines))
        drive(target.port, pools.seen * 100, 8)  # warm-up
        record = subprocess.Popen(
            [spy, "record", "--pid", str(target.proc.pid), "--duration", str(args.seconds)]
            + ["--rate", str(args.rate), "--format", "raw", "--nolineno", "--output", str(raw)]
            + (["--native"] if args.native else []),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        time.sleep(0.5)
        cpu0 = proc_cpu_ticks(target.proc.pid) or 0
        url = f"http://127.0.0.1:{target.port}/api/v1/introspect"
        load = [wrk, "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", str(LUA)]
        done = subprocess.run(
            [*load, url, "--", str(bodies)],
            capture_output=True,
            text=True,
        )
        cpu1 = proc_cpu_ticks(target.proc.pid) or 0
        _, errors = record.communicate(timeout=60)
        found = re.search(r'"requests":(\d+)', done.stdout)
        inactive = re.search(r'"inactive":(\d+)', done.stdout)
        if found is None or inactive is None or int(inactive.group(1)):
            sys.exit(f"wrk failed or saw inactive answers:\n{done.stdout}{done.stderr}")
        wrapped = re.search(r'"wrapped":(\d+)', done.stdout)
        if args.workload == "new" and wrapped is not None and int(wrapped.group(1)):
            print("WARNING: the new tokens ran out and were sent again (cache hits); use fewer --seconds")
        if record.returncode != 0:
            sys.exit(f"py-spy failed: {errors.decode(errors='replace')}")
    finally:
        target.stop()
    requests = int(found.group(1))
    us = (cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") / requests * 1e6
    total, inclusive, own = summarise(raw)
    return total, inclusive, own, us


if __name__ == "__main__":
    raise SystemExit(main())

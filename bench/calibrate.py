"""Instructions per µs of this machine, for turning callgrind's counts into time.

    python bench/calibrate.py   # instructions per µs; one RS256 verify in instructions and µs

The workload is texas's own request path without I/O and without cryptography: parse the
request body, split the token and check its header, decode the payload and check the claims,
splice the answer. That is the kind of code (CPython's interpreter, dict and bytes work) that
texas adds above the ceiling. It is counted under callgrind at two loop sizes (the difference
cancels start-up) and timed natively with timeit, taking the best of several repeats, which a
loaded machine can only make slower, never faster.

Cryptography is left out on purpose: under valgrind the CPU's SHA and big-number extensions
(SHA-NI, ADX, AVX-512) are hidden, so OpenSSL runs longer generic code than it runs natively,
and its instructions are worth less time than the interpreter's. So one RS256 verify (texas's
PreparedKey.verify, through joserfc and cryptography) is measured on its own, both ways: a
`new` request costs the ceiling plus one verify plus what texas adds around it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import timeit
from dataclasses import dataclass
from pathlib import Path

import orjson

from tokens import AUDIENCE, ISSUER, TokenSpec, mint, new_key_pem, public_jwks

LOOPS = (500, 1_500)
_SUMMARY = re.compile(rb"^(?:summary|totals):\s+(\d+)", re.MULTILINE)


def verify_workload(tmp: Path) -> object:
    """One RS256 signature check, as texas makes it."""
    from texas.introspection.keys import prepare_key
    from texas.introspection.validation import split

    key = prepare_key(public_jwks((tmp / "key.pem").read_bytes())["keys"][0])
    compact = split(orjson.loads((tmp / "body.json").read_bytes())["token"])

    def once() -> bool:
        return key.verify(compact.alg, compact.signing_input, compact.signature)

    return once


def python_workload(tmp: Path) -> object:
    """One request's pure-Python work in texas, minus the signature check."""
    from texas.introspection.handler import active_body, parse_request
    from texas.introspection.validation import Policy, Verified, check_claims, decode_payload, split

    body = (tmp / "body.json").read_bytes()
    policy = Policy(issuer=ISSUER, audience=AUDIENCE, leeway=60)
    now = orjson.loads(decode_payload(split(orjson.loads(body)["token"]))[1])["iat"]

    def once() -> bytes:
        request = parse_request("application/json", body)
        compact = split(request.token)
        claims, payload = decode_payload(compact)
        times = check_claims(claims, policy, now)
        return active_body(Verified(claims, payload, None, times))  # type: ignore[arg-type]

    return once


WORKLOADS = {"python": python_workload, "verify": verify_workload}


def write_inputs(tmp: Path) -> None:
    pem = new_key_pem()
    (tmp / "key.pem").write_bytes(pem)
    token = mint(TokenSpec(key_pem=pem), 1)[0]
    (tmp / "body.json").write_bytes(orjson.dumps({"identity_provider": "idporten", "token": token}))


def loop(kind: str, count: int, tmp: Path) -> None:
    """Run a workload `count` times (the child process under callgrind)."""
    once = WORKLOADS[kind](tmp)
    for _ in range(count):
        once()  # type: ignore[operator]


def instructions_per_loop(kind: str, tmp: Path) -> float:
    totals = []
    for count in LOOPS:
        out = tmp / f"calibrate.{kind}.{count}.out"
        subprocess.run(
            [
                *("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"),
                *(sys.executable, __file__, "--loop", kind, str(count), str(tmp)),
            ],
            check=True,
            capture_output=True,
            cwd=Path(__file__).parent,
        )
        found = _SUMMARY.search(out.read_bytes())
        assert found is not None, "callgrind wrote no total"
        totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / (LOOPS[1] - LOOPS[0])


def microseconds_per_loop(kind: str, tmp: Path) -> float:
    once = WORKLOADS[kind](tmp)
    timer = timeit.Timer(once)  # type: ignore[arg-type]
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=15, number=number)) / number * 1e6


@dataclass(frozen=True)
class Calibration:
    python_ir: float  # instructions of the pure-Python workload
    python_us: float  # its native µs, best of 15
    verify_ir: float  # instructions of one RS256 verify under callgrind
    verify_us: float  # its native µs, best of 15

    @property
    def rate(self) -> float:
        """Instructions per µs of interpreter work."""
        return self.python_ir / self.python_us

    def describe(self) -> str:
        return (
            f"{self.rate:,.0f} instructions per µs of interpreter work (texas's request path "
            f"without crypto: {self.python_ir:,.0f} instructions, {self.python_us:.2f} µs natively); "
            f"one RS256 verify: {self.verify_ir:,.0f} instructions under callgrind, "
            f"{self.verify_us:.1f} µs natively (best of 15)"
        )


def calibrate(*, skip_python: bool = False, skip_verify_us: bool = False) -> Calibration:
    """Both workloads counted and timed; `skip_*` leaves a timing out (as 1.0) when the
    caller supplies its own figure, so that runs compared later share one conversion."""
    with tempfile.TemporaryDirectory(prefix="texas-calibrate-") as tmp_name:
        tmp = Path(tmp_name)
        write_inputs(tmp)
        return Calibration(
            python_ir=instructions_per_loop("python", tmp),
            python_us=1.0 if skip_python else microseconds_per_loop("python", tmp),
            verify_ir=instructions_per_loop("verify", tmp),
            verify_us=1.0 if skip_verify_us else microseconds_per_loop("verify", tmp),
        )


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--loop":
        loop(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
        return 0
    print(calibrate().describe())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Unauthenticated input never grows memory beyond a small fixed bound: what a forged token
leaves behind after its verdict is measured with tracemalloc."""

from __future__ import annotations

import gc
import json
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support import b64, claims_for
from texas import errors
from texas.introspection.handler import INTROSPECTOR, IntrospectRequest
from texas.introspection.validation import split

FORGED = 1000
HEADER_BYTES = 8 * 1024
BOUND = 256 * 1024  # retained after all of them; the old memo of parsed headers kept ~20 MiB


def forged_tokens(issuer: str, count: int = FORGED) -> Iterator[str]:
    """Tokens with distinct ~8 KiB headers (never seen before in this process), an honest alg
    and kid, and a signature of the right size that verifies nothing."""
    payload = b64(json.dumps(claims_for("idporten", issuer)).encode())
    signature = b64(bytes(256))
    run = uuid.uuid4().hex
    for n in range(count):
        header: dict[str, Any] = {"alg": "RS256", "kid": "key-1", "typ": "JWT"}
        for i in range(HEADER_BYTES // 96):
            header[f"m{i}"] = f"{run}-{n}-{i}".ljust(80, "x")
        yield f"{b64(json.dumps(header).encode())}.{payload}.{signature}"


def retained(run: Callable[[], None]) -> int:
    """Bytes still allocated after `run`, beyond what was allocated before it."""
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        run()
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return after - before


def test_small_headers_leave_nothing_behind_in_the_core() -> None:
    """Short headers, each one new: 5,000 of them would keep over a MiB if anything in the core
    remembered them (as a memo of recent headers would, however small each entry)."""
    payload = b64(json.dumps(claims_for("idporten", "https://issuer.example/idporten")).encode())
    signature = b64(bytes(256))
    run_id = uuid.uuid4().hex
    headers = (json.dumps({"alg": "RS256", "kid": "key-1", "n": f"{run_id}-{n}"}) for n in range(5000))
    tokens = [f"{b64(h.encode())}.{payload}.{signature}" for h in headers]

    def run() -> None:
        for t in tokens:
            split(t)

    assert retained(run) < 64 * 1024


def test_forged_headers_leave_nothing_behind_in_the_core() -> None:
    tokens = list(forged_tokens("https://issuer.example/idporten"))
    assert all(len(t) > HEADER_BYTES for t in tokens)

    def run() -> None:
        for t in tokens:
            split(t)

    assert retained(run) < BOUND


@pytest.mark.parametrize("routed", [False, True], ids=["provider-named", "routed-by-issuer"])
async def test_forged_headers_leave_nothing_behind_in_the_service(texas: Any, routed: bool) -> None:
    introspector = texas.app[INTROSPECTOR]
    issuer = introspector.providers.get("idporten").issuer
    requests = [
        IntrospectRequest(identity_provider=None if routed else "idporten", token=t, level=None)
        for t in forged_tokens(issuer)
    ]
    await introspector(requests[0])  # first-call allocations (metric children, lazy imports)
    verdicts = []
    gc.collect()
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for request in requests[1:]:
            verdicts.append((await introspector(request)).outcome)
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert set(verdicts) == {errors.BadSignature.reason}
    assert after - before < BOUND

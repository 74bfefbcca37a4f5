"""The batch that runs introspection decisions back to back (texas/introspection/batch.py), and the
verdicts of tokens that share one."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from tests.conftest import introspect
from tests.support import FakeIssuer, claims_for, make_key, sign
from texas.introspection.batch import Batch
from texas.ops import logs


async def test_calls_queued_in_one_iteration_run_together_in_the_next() -> None:
    batch = Batch()
    ran: list[int] = []

    def call(n: int) -> int:
        ran.append(n)
        return n * 10

    futures = [batch.run(call, n) for n in range(3)]
    assert ran == [], "nothing runs before the loop turns"
    assert await asyncio.gather(*futures) == [0, 10, 20]
    assert ran == [0, 1, 2]


async def test_a_call_that_raises_fails_only_its_own_future() -> None:
    batch = Batch()

    def call(n: int) -> int:
        if n == 1:
            raise ValueError("one")
        return n

    results = await asyncio.gather(*(batch.run(call, n) for n in range(3)), return_exceptions=True)
    assert results[0] == 0 and results[2] == 2
    assert isinstance(results[1], ValueError)


async def test_a_cancelled_call_is_not_run() -> None:
    batch = Batch()
    ran: list[int] = []
    first, second = batch.run(ran.append, 1), batch.run(ran.append, 2)
    first.cancel()
    await second
    assert ran == [2]


async def test_a_call_queued_while_a_batch_runs_goes_to_the_next_batch() -> None:
    batch = Batch()
    ran: list[str] = []
    later: list[asyncio.Future[None]] = []

    def call(name: str) -> None:
        later.append(batch.run(ran.append, "queued from inside"))
        ran.append(name)

    await batch.run(call, "first")
    await asyncio.wait_for(later[0], timeout=5)
    assert ran == ["first", "queued from inside"]


async def test_each_call_runs_in_its_callers_context() -> None:
    """So a log line from inside a batch names its own request's id (logs.request_id)."""
    batch = Batch()

    async def caller(rid: str) -> str:
        logs.request_id.set(rid)
        return await batch.run(logs.request_id.get)

    assert await asyncio.gather(caller("first"), caller("second")) == ["first", "second"]


def test_a_queue_left_by_a_closed_loop_does_not_stall_the_next() -> None:
    batch = Batch()

    async def submit_and_leave() -> None:
        batch.run(lambda: None)  # the loop ends before its next iteration

    loop = asyncio.new_event_loop()
    loop.run_until_complete(submit_and_leave())
    loop.close()

    async def submit_and_wait() -> int:
        return await asyncio.wait_for(batch.run(lambda: 7), timeout=5)

    assert asyncio.run(submit_and_wait()) == 7


@pytest.mark.parametrize("concurrent", [2, 40])
async def test_tokens_checked_in_one_batch_each_get_their_own_verdict(
    texas, issuer: FakeIssuer, concurrent: int
) -> None:
    """Valid, forged, expired and wrong-audience tokens sent at once share batches; each
    answer is the one its own token earns, with its own claims."""
    real, attacker = make_key("RS256", "key-1"), make_key("RS256", "attacker")  # both sign as key-1
    iss = issuer.issuer("idporten")
    kinds: list[tuple[str, Any, dict[str, Any]]] = [
        ("active", real, {}),
        ("bad_signature", attacker, {}),
        ("expired", real, {"exp": 1000}),
        ("wrong_audience", real, {"aud": "other"}),
    ]
    cases: list[tuple[str, str, str]] = []  # token, expected outcome, its jti
    for n in range(concurrent):
        expected, key, overrides = kinds[n % len(kinds)]
        jti = str(uuid.uuid4())
        cases.append((sign(claims_for("idporten", iss, jti=jti, **overrides), key), expected, jti))

    answers = await asyncio.gather(*(introspect(texas, token) for token, _, _ in cases))
    for (_, expected, jti), answer in zip(cases, answers, strict=True):
        if expected == "active":
            assert answer["active"] is True and answer["jti"] == jti
        else:
            assert answer["active"] is False and answer["reason"] == expected, answer
            assert "jti" not in answer

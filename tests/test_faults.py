"""Fault injection (issue 5, item 4): the real service against a real local issuer that goes down,
serves garbage, hangs, resets connections, rotates and removes keys, and is flooded with
made-up kids. Each test asserts how texas keeps its keys over time (README, "Keys over time")
with the issuer's own count and timestamps of JWKS fetches, never with guesses.

Windows are shortened through the environment (TEXAS_JWKS_MIN_REFRESH_SECONDS of 0.5-2 s,
TEXAS_JWKS_FETCH_TIMEOUT_SECONDS=1) so the file runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support import FakeIssuer, claims_for, make_key, public_jwk, sign, sign_raw

KEY1 = public_jwk(make_key("RS256", "key-1"), "key-1")
KEY2 = public_jwk(make_key("RS256", "key-2"), "key-2")
P = "idporten"


class TimedIssuer(FakeIssuer):
    """The fake issuer, also noting when each JWKS request arrived (monotonic seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.fetch_times: dict[str, list[float]] = defaultdict(list)
        self.app.middlewares.append(self._stamp)

    @web.middleware
    async def _stamp(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("/jwks"):
            self.fetch_times[request.path.split("/")[1]].append(time.monotonic())
        return await handler(request)  # type: ignore[no-any-return]

    def fetches(self, provider: str = P) -> int:
        return self.state[provider].jwks_fetches

    def times_since(self, moment: float, provider: str = P) -> list[float]:
        return [t for t in self.fetch_times[provider] if t >= moment]


@pytest.fixture
async def issuer(aiohttp_server: Any) -> TimedIssuer:
    """Overrides conftest's issuer (make_texas and token use this one): same keys, with times."""
    fake = TimedIssuer()
    server = await aiohttp_server(fake.app)
    fake.base_url = str(server.make_url("")).rstrip("/")
    for provider in fake.state:
        fake.publish(provider, KEY1)
    return fake


Client = TestClient[Any, Any]
Start = Callable[..., Awaitable[Client]]


def jti() -> str:
    return uuid.uuid4().hex


def signed_by(issuer: FakeIssuer, kid: str, **claims: Any) -> str:
    return sign(claims_for(P, issuer.issuer(P), jti=jti(), **claims), make_key("RS256", kid), kid=kid)


def random_kid_token(issuer: FakeIssuer) -> str:
    """A flood token: a made-up kid; the signature never gets looked at."""
    header = {"alg": "RS256", "typ": "JWT", "kid": f"flood-{uuid.uuid4().hex}"}
    payload = repr(claims_for(P, issuer.issuer(P))).encode()
    return sign_raw(header, payload, lambda _: b"\x00" * 256)


async def verdict(client: Client, token: str) -> dict[str, Any]:
    response = await client.post("/api/v1/introspect", json={"identity_provider": P, "token": token})
    assert response.status == 200
    return await response.json()  # type: ignore[no-any-return]


async def reason(client: Client, token: str) -> str:
    answer = await verdict(client, token)
    return "active" if answer["active"] else str(answer["reason"])


async def ready(client: Client) -> tuple[int, dict[str, Any]]:
    response = await client.get("/readyz")
    return response.status, await response.json()


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, step: float = 0.05) -> float:
    """Seconds until `condition` held; fails after `timeout`."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < timeout, f"not within {timeout} s"
        await asyncio.sleep(step)
    return time.monotonic() - started


async def in_batches(calls: list[Callable[[], Awaitable[Any]]], width: int = 25) -> list[Any]:
    """Run the calls `width` at a time: a bounded load, like many clients, not one burst."""
    results: list[Any] = []
    for start in range(0, len(calls), width):
        results += await asyncio.gather(*(call() for call in calls[start : start + width]))
    return results


def fetch_triggers(text: str) -> dict[str, float]:
    """texas's own count of JWKS fetches for P by trigger (process-wide: use differences)."""
    counts: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "texas_jwks_fetches_total" and sample.labels.get("provider") == P:
                counts[sample.labels["trigger"]] += sample.value
    return counts


# --- the issuer is unreachable or broken -------------------------------------------------------


async def test_down_at_start_up(make_texas: Start, issuer: TimedIssuer, token: Callable[..., str]) -> None:
    """Starts anyway, 503 and keys_unavailable, retries with a backoff from 1 s, recovers; the
    requests that arrive meanwhile never cause a fetch."""
    issuer.state[P].mode = "down"
    client = await make_texas((P,), TEXAS_JWKS_FETCH_TIMEOUT_SECONDS="1")
    status, body = await ready(client)
    assert status == 503 and body["providers"][P]["ready"] is False
    assert issuer.fetches() == 1

    answers = await in_batches([lambda: reason(client, token(jti=jti())) for _ in range(50)])
    assert set(answers) == {"keys_unavailable"}

    async def fetched(n: int) -> bool:
        return issuer.fetches() >= n

    await wait_for(lambda: fetched(2), timeout=10)  # the first retry, 1 s after start-up
    issuer.state[P].mode = "ok"

    async def is_ready() -> bool:
        return (await ready(client))[0] == 200

    await wait_for(is_ready, timeout=10)  # the second retry, 2 s after the first
    assert issuer.fetches() == 3, "start-up, retry after 1 s, retry after 2 s; no request fetched"
    first, retry1, retry2 = issuer.fetch_times[P]
    # lower bounds only: a busy machine makes sleeps longer, never shorter
    assert retry1 - first >= 0.8, retry1 - first
    assert retry2 - retry1 >= 1.6, f"the backoff doubles: {retry2 - retry1}"
    assert await reason(client, token(jti=jti())) == "active"


@pytest.mark.parametrize("mode", ["down", "garbage", "empty", "enc_only", "reset", "hang"])
async def test_failed_fetch_keeps_the_keys_held(make_texas: Start, issuer: TimedIssuer, mode: str) -> None:
    """Down later, garbage, an empty or encryption-only key set, a reset connection, a fetch
    that hangs past the timeout: one fetch, the keys held stay, held kids never fetch, and the
    next good fetch brings the new key."""
    client = await make_texas(
        (P,), TEXAS_JWKS_MIN_REFRESH_SECONDS="0.5", TEXAS_JWKS_FETCH_TIMEOUT_SECONDS="2"
    )
    assert await reason(client, signed_by(issuer, "key-1")) == "active"
    issuer.state[P].mode = mode
    issuer.state[P].hang_seconds = 60  # far past the fetch timeout
    issuer.publish(P, KEY1, KEY2)
    await asyncio.sleep(0.55)  # the window after the start-up fetch is open again
    before = issuer.fetches()

    # aiohttp resends a GET once when the connection drops: see the xfail test below
    per_fetch = 2 if mode == "reset" else 1

    started = time.monotonic()
    assert await reason(client, signed_by(issuer, "key-2")) == "unknown_key"
    assert time.monotonic() - started < 30, "the fetch is bounded by the fetch timeout, not the hang"
    assert issuer.fetches() == before + per_fetch

    held = await in_batches([lambda: reason(client, signed_by(issuer, "key-1")) for _ in range(40)])
    assert set(held) == {"active"}
    assert issuer.fetches() == before + per_fetch, "a held kid never fetches"
    status, body = await ready(client)
    assert status == 200 and body["providers"][P]["keys"] == 1
    assert "error" in body["providers"][P]

    issuer.state[P].mode = "ok"
    await asyncio.sleep(0.55)  # past the window, and past the time key-2 is remembered as unknown
    assert await reason(client, signed_by(issuer, "key-2")) == "active"
    assert issuer.fetches() == before + per_fetch + 1


@pytest.mark.xfail(
    strict=True,
    reason="aiohttp's ClientSession resends an idempotent request once after "
    "ServerDisconnectedError/ClientOSError, so one texas fetch reaches an issuer that resets "
    "connections twice; the contract allows one fetch per window",
)
async def test_a_reset_connection_costs_one_upstream_request(make_texas: Start, issuer: TimedIssuer) -> None:
    client = await make_texas(
        (P,), TEXAS_JWKS_MIN_REFRESH_SECONDS="0.5", TEXAS_JWKS_FETCH_TIMEOUT_SECONDS="1"
    )
    issuer.state[P].mode = "reset"
    await asyncio.sleep(0.55)
    before = issuer.fetches()
    assert await reason(client, signed_by(issuer, "key-2")) == "unknown_key"
    assert issuer.fetches() == before + 1


async def test_kid_longer_than_any_key_id_costs_no_fetch(make_texas: Start, issuer: TimedIssuer) -> None:
    from texas.introspection.keys import MAX_KID_LENGTH

    client = await make_texas((P,), TEXAS_JWKS_MIN_REFRESH_SECONDS="0.5")
    await asyncio.sleep(0.55)
    before = issuer.fetches()
    assert await reason(client, signed_by(issuer, "k" * (MAX_KID_LENGTH + 1))) == "unknown_key"
    assert issuer.fetches() == before, "no published key can carry this kid"


# --- keys change upstream -------------------------------------------------------------------------


async def test_rotation_is_picked_up_through_the_unknown_kid(make_texas: Start, issuer: TimedIssuer) -> None:
    client = await make_texas((P,), TEXAS_JWKS_MIN_REFRESH_SECONDS="0.5")
    await asyncio.sleep(0.55)
    issuer.publish(P, KEY1, KEY2)
    before = issuer.fetches()
    answers = await asyncio.gather(*(reason(client, signed_by(issuer, "key-2")) for _ in range(20)))
    assert set(answers) == {"active"}
    assert issuer.fetches() == before + 1, "twenty requests for the new kid share one fetch"
    more = await in_batches(
        [partial(reason, client, signed_by(issuer, kid)) for kid in ("key-1", "key-2") * 10]
    )
    assert set(more) == {"active"}
    assert issuer.fetches() == before + 1


async def test_removed_key_stops_validating_after_the_next_refresh(
    make_texas: Start, issuer: TimedIssuer
) -> None:
    issuer.publish(P, KEY1, KEY2)
    client = await make_texas((P,), TEXAS_JWKS_MIN_REFRESH_SECONDS="0.5")
    old = signed_by(issuer, "key-1")
    assert await reason(client, old) == "active"
    issuer.publish(P, KEY2)
    before = issuer.fetches()
    assert await reason(client, old) == "active", "nothing refreshed yet: the key is still held"
    assert issuer.fetches() == before

    await asyncio.sleep(0.55)
    assert await reason(client, signed_by(issuer, "key-3")) == "unknown_key"  # triggers the refresh
    assert issuer.fetches() == before + 1
    assert await reason(client, old) == "unknown_key", "a verified token is not served from cache"
    assert await reason(client, signed_by(issuer, "key-1")) == "unknown_key"
    assert await reason(client, signed_by(issuer, "key-2")) == "active"


async def test_max_age_removes_a_key_without_any_unknown_kid(make_texas: Start, issuer: TimedIssuer) -> None:
    """Cache-Control: max-age=2 drives the background refresh (clamped to [MIN_REFRESH,
    REFRESH]); a removed key goes within about 2 s though no request names an unknown kid."""
    issuer.state[P].cache_control = "max-age=2"
    issuer.publish(P, KEY1, KEY2)
    client = await make_texas((P,), TEXAS_JWKS_MIN_REFRESH_SECONDS="1")
    triggers_before = fetch_triggers(await (await client.get("/metrics")).text())
    old = signed_by(issuer, "key-1")
    assert await reason(client, old) == "active"
    issuer.publish(P, KEY2)
    removed_at = time.monotonic()

    async def one_key() -> bool:
        return bool((await ready(client))[1]["providers"][P]["keys"] == 1)

    elapsed = await wait_for(one_key, timeout=15, step=0.1)
    refreshes = issuer.times_since(removed_at)
    assert 1 <= len(refreshes) <= elapsed / 1 + 1, refreshes  # never more than one per MIN_REFRESH
    triggers = fetch_triggers(await (await client.get("/metrics")).text())
    assert triggers["unknown_kid"] == triggers_before["unknown_kid"]
    assert triggers["trailing"] == triggers_before["trailing"]
    assert await reason(client, old) == "unknown_key"


async def test_keys_past_max_stale_are_dropped_and_recover(make_texas: Start, issuer: TimedIssuer) -> None:
    """TEXAS_JWKS_MAX_STALE_SECONDS: keys unconfirmed for that long are dropped (503,
    keys_unavailable), and come back with the next successful fetch."""
    client = await make_texas(
        (P,),
        TEXAS_JWKS_REFRESH_SECONDS="1",
        TEXAS_JWKS_MIN_REFRESH_SECONDS="0.5",
        TEXAS_JWKS_MAX_STALE_SECONDS="2",
        TEXAS_JWKS_FETCH_TIMEOUT_SECONDS="1",
    )
    token = signed_by(issuer, "key-1")
    assert await reason(client, token) == "active"
    issuer.state[P].mode = "down"
    confirmed = issuer.fetch_times[P][-1]

    async def not_ready() -> bool:
        return (await ready(client))[0] == 503

    await wait_for(not_ready, timeout=15)
    assert time.monotonic() - confirmed >= 2, "not dropped before max-stale"
    assert await reason(client, token) == "keys_unavailable", "a cached verdict does not outlive its key"
    metrics = await (await client.get("/metrics")).text()
    assert f'texas_jwks_staleness_seconds{{provider="{P}"}}' in metrics

    failed = issuer.fetches()  # read and switch with no await between: no fetch slips in
    assert failed >= 2, "the background refresh kept trying"
    issuer.state[P].mode = "ok"

    async def is_ready() -> bool:
        return (await ready(client))[0] == 200

    await wait_for(is_ready, timeout=15)
    # the first fetch after the switch restores the keys (a busy machine may let the next
    # periodic one, 1 s later, in before this line)
    assert failed + 1 <= issuer.fetches() <= failed + 2
    assert await reason(client, token) == "active"


# --- floods of made-up kids -----------------------------------------------------------------------


async def test_flood_of_random_kids_costs_at_most_one_fetch_per_window(
    make_texas: Start, issuer: TimedIssuer
) -> None:
    window = 1.0
    client = await make_texas((P,), TEXAS_JWKS_MIN_REFRESH_SECONDS=str(window))
    tokens = [random_kid_token(issuer) for _ in range(1200)]
    started = time.monotonic()
    answers = await in_batches([partial(reason, client, t) for t in tokens], width=40)
    duration = time.monotonic() - started
    assert set(answers) == {"unknown_key"}
    await asyncio.sleep(window + 0.3)  # let a trailing refresh run
    times = issuer.fetch_times[P]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Times of arrival at the issuer, which shares the busy event loop with texas: a fetch may
    # arrive late, so its gap to the next one looks shorter than the window it kept.
    assert all(gap >= window / 2 for gap in gaps), f"two fetches in one window: {gaps}"
    assert len(times) - 1 <= duration / window + 2, f"{len(times) - 1} fetches in {duration:.1f} s"


async def test_genuine_rotation_after_a_flood_is_picked_up_within_the_window(
    make_texas: Start, issuer: TimedIssuer
) -> None:
    """The flood uses up the window; the genuine new kid is answered at once, and a trailing
    refresh at the window's end brings it in, at most MIN_REFRESH + 2 s after it appears."""
    window = 2.0
    client = await make_texas((P,), TEXAS_JWKS_MIN_REFRESH_SECONDS=str(window))
    flood_started = time.monotonic()
    tokens = [random_kid_token(issuer) for _ in range(1000)]
    assert set(await in_batches([partial(reason, client, t) for t in tokens], width=40)) == {"unknown_key"}

    issuer.publish(P, KEY1, KEY2)
    new = signed_by(issuer, "key-2")

    async def active() -> bool:
        return await reason(client, new) == "active"

    # promised within the window; the slack is for a busy machine, far below the 300 s periodic refresh
    await wait_for(active, timeout=window + 10, step=0.1)
    assert len(issuer.times_since(flood_started)) <= 3, issuer.times_since(flood_started)
    assert await reason(client, signed_by(issuer, "key-1")) == "active"


async def test_held_kids_are_answered_while_the_jwks_hangs(make_texas: Start, issuer: TimedIssuer) -> None:
    """200 requests whose key is held, while a fetch hangs: every one is answered before the
    fetch ends (it hangs far longer than they take, even on a busy machine)."""
    client = await make_texas(
        (P,), TEXAS_JWKS_MIN_REFRESH_SECONDS="0.5", TEXAS_JWKS_FETCH_TIMEOUT_SECONDS="60"
    )
    tokens = [signed_by(issuer, "key-1") for _ in range(200)]  # distinct: each one is verified
    issuer.state[P].mode = "hang"
    issuer.state[P].hang_seconds = 120
    await asyncio.sleep(0.55)
    before = issuer.fetches()
    waiting = asyncio.create_task(reason(client, signed_by(issuer, "key-2")))  # joins the hanging fetch

    async def hanging() -> bool:
        return issuer.fetches() == before + 1

    await wait_for(hanging, timeout=10)
    answers = await in_batches([partial(reason, client, t) for t in tokens], width=10)
    assert set(answers) == {"active"}
    assert not waiting.done(), "the fetch was still hanging while the held kids were answered"
    assert issuer.fetches() == before + 1
    waiting.cancel()

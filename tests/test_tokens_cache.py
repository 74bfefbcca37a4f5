"""The issued-token cache (texas.tokens.cache) on an injected clock: margins, the user token's
`exp`, single flight, skip_cache, failures never stored, bounds. The fetch is a counted
coroutine here; tests/test_tokens.py drives the same cache over HTTP against a strict server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.support import Clock
from texas.errors import IdentityProviderFailed, IdentityProviderRefused
from texas.tokens.cache import GrantCache, Served, exchange_key, machine_key
from texas.tokens.client import Issued

T0 = 1_800_000_000.0
KEY = machine_key("maskinporten", "nav:test/api", None, None)


class Upstream:
    """A counted fetch: issues `access-N` living `lifetime` s, or raises what it is told to."""

    def __init__(self, lifetime: float = 3600) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.fail: list[Exception] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Issued:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise self.fail.pop(0)
        return Issued(f"access-{self.calls}", "Bearer", self.lifetime)


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def cache(clock: Clock) -> GrantCache:
    return GrantCache(100, 1024 * 1024, clock=clock)


def getter(
    cache: GrantCache, upstream: Upstream, key: bytes = KEY, **options: object
) -> Callable[..., Awaitable[Served]]:
    async def get(**more: object) -> Served:
        return await cache.get(
            key, upstream, endpoint="token", provider="maskinporten", **{**options, **more}
        )  # type: ignore[arg-type]

    return get


@pytest.mark.parametrize(
    ("lifetime", "fresh_for"),
    [(3600, 3480), (121, 1), (120, 60), (100, 50), (10, 5)],
    ids=["hour", "just-over-120", "exactly-120", "100s", "10s"],
)
async def test_an_entry_is_served_until_its_margin(
    cache: GrantCache, clock: Clock, lifetime: float, fresh_for: float
) -> None:
    upstream = Upstream(lifetime)
    get = getter(cache, upstream)
    assert (await get()).access_token == "access-1"
    clock.now = T0 + fresh_for - 0.5
    hit = await get()
    assert (hit.access_token, hit.source) == ("access-1", "hit")
    assert hit.expires_in == round(lifetime - fresh_for + 0.5)  # counts down
    clock.now = T0 + fresh_for + 0.5
    miss = await get()
    assert (miss.access_token, miss.source) == ("access-2", "fetched")
    assert upstream.calls == 2


async def test_an_exchanged_token_is_never_served_past_the_user_tokens_exp(
    cache: GrantCache, clock: Clock
) -> None:
    upstream = Upstream(3600)
    key = exchange_key("tokenx", "cluster:ns:app", "user-token")
    get = getter(cache, upstream, key, user_exp=T0 + 300)
    await get()
    clock.now = T0 + 299
    assert (await get()).source == "hit"
    clock.now = T0 + 300
    assert (await get()).access_token == "access-2"
    upstream.fail = [IdentityProviderFailed("down", retryable=True)]
    clock.now = T0 + 301  # the entry, fetched with the same exp, cannot be served through an outage either
    with pytest.raises(IdentityProviderFailed):
        await get()


async def test_a_user_token_already_expired_is_never_cached(cache: GrantCache, clock: Clock) -> None:
    upstream = Upstream(3600)
    get = getter(cache, upstream, exchange_key("tokenx", "t", "u"), user_exp=T0 - 1)
    await get()
    await get()
    assert upstream.calls == 2
    assert len(cache) == 0


def test_keys_never_hold_the_user_token_and_differ_by_every_part() -> None:
    key = exchange_key("tokenx", "t", "secret-user-token")
    assert b"secret" not in key and len(key) == 32
    keys = {
        machine_key("maskinporten", "a", None, None),
        machine_key("maskinporten", "b", None, None),
        machine_key("maskinporten", "a", "r", None),
        machine_key("maskinporten", "a", None, [{"type": "x"}]),
        machine_key("azuread", "a", None, None),
        exchange_key("tokenx", "a", "u1"),
        exchange_key("tokenx", "a", "u2"),
        exchange_key("azuread", "a", "u1"),
    }
    assert len(keys) == 8
    assert machine_key("m", "a", None, [{"x": 1, "y": 2}]) == machine_key("m", "a", None, [{"y": 2, "x": 1}])


async def test_fifty_concurrent_misses_share_one_fetch(cache: GrantCache) -> None:
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    get = getter(cache, upstream)
    waiting = [asyncio.create_task(get()) for _ in range(50)]
    await asyncio.sleep(0)
    upstream.gate.set()
    served = await asyncio.gather(*waiting)
    assert upstream.calls == 1
    assert {s.access_token for s in served} == {"access-1"}


async def test_a_shared_failure_reaches_every_waiter_and_is_not_stored(cache: GrantCache) -> None:
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    upstream.fail = [IdentityProviderRefused(400, "invalid_scope", "no")]
    get = getter(cache, upstream)
    waiting = [asyncio.create_task(get()) for _ in range(5)]
    await asyncio.sleep(0)
    upstream.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, IdentityProviderRefused) for r in results)
    assert upstream.calls == 1 and len(cache) == 0
    assert (await get()).access_token == "access-2"


async def test_a_cancelled_caller_does_not_cancel_the_shared_fetch(cache: GrantCache) -> None:
    upstream = Upstream()
    upstream.gate = asyncio.Event()
    get = getter(cache, upstream)
    first, second = asyncio.create_task(get()), asyncio.create_task(get())
    await asyncio.sleep(0)
    first.cancel()
    upstream.gate.set()
    assert (await second).access_token == "access-1"
    assert upstream.calls == 1


async def test_skip_cache_fetches_and_replaces(cache: GrantCache) -> None:
    upstream = Upstream()
    get = getter(cache, upstream)
    await get()
    assert (await get(skip_cache=True)).access_token == "access-2"
    assert (await get()).access_token == "access-2"


async def test_bounded_in_entries(clock: Clock) -> None:
    cache = GrantCache(3, 1024 * 1024, clock=clock)
    upstream = Upstream()
    for target in "abcd":
        await getter(cache, upstream, machine_key("m", target, None, None))()
    assert len(cache) == 3
    await getter(cache, upstream, machine_key("m", "a", None, None))()  # the oldest left
    assert upstream.calls == 5


async def test_bounded_in_bytes(clock: Clock) -> None:
    cache = GrantCache(1000, 2000, clock=clock)
    upstream = Upstream()
    for target in "abcdefgh":
        await getter(cache, upstream, machine_key("m", target, None, None))()
    assert cache.size_bytes <= 2000
    assert 0 < len(cache) < 8


async def test_a_disabled_cache_still_answers(clock: Clock) -> None:
    cache = GrantCache(0, 0, clock=clock)
    upstream = Upstream()
    await getter(cache, upstream)()
    await getter(cache, upstream)()
    assert upstream.calls == 2 and len(cache) == 0


async def test_sweep_drops_entries_that_cannot_be_served(cache: GrantCache, clock: Clock) -> None:
    await getter(cache, Upstream(3600))()
    clock.now = T0 + 3500
    cache.sweep()
    assert len(cache) == 1  # still good through an outage (100 s left)
    clock.now = T0 + 3571
    cache.sweep()
    assert len(cache) == 0

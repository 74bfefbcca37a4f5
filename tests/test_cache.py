"""The verified-token cache: each promise it makes, shown through the real service."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from tests.conftest import introspect
from tests.support import FakeIssuer, claims_for, make_key, public_jwk, sign
from texas.introspection.cache import Entry, TokenCache
from texas.introspection.handler import INTROSPECTOR
from texas.introspection.validation import Times
from texas.ops import telemetry


def hits_and_misses() -> tuple[float, float]:
    telemetry.flush()
    lookups = telemetry.TOKEN_CACHE_LOOKUPS
    return lookups.labels("hit")._value.get(), lookups.labels("miss")._value.get()


async def test_second_request_is_a_hit_and_counted(texas: Any, token: Any) -> None:
    t = token()
    hits, misses = hits_and_misses()
    assert (await introspect(texas, t))["active"] is True
    assert (await introspect(texas, t))["active"] is True
    assert hits_and_misses() == (hits + 1, misses + 1)
    assert len(texas.app[INTROSPECTOR].cache) == 1
    text = await (await texas.get("/metrics")).text()
    assert 'texas_token_cache_lookups_total{result="hit"}' in text
    assert "texas_token_cache_entries 1.0" in text


async def test_failures_are_never_cached(texas: Any, token: Any) -> None:
    for _ in range(3):
        assert (await introspect(texas, token(aud="someone-else")))["active"] is False
    assert len(texas.app[INTROSPECTOR].cache) == 0


async def test_time_claims_are_checked_on_every_hit(texas: Any, token: Any) -> None:
    introspector = texas.app[INTROSPECTOR]
    now = time.time()
    t = token(exp=int(now) + 100)
    assert (await introspect(texas, t))["active"] is True
    introspector.clock = lambda: now + 100 + 59  # inside the leeway: still a hit, still active
    assert (await introspect(texas, t))["active"] is True
    introspector.clock = lambda: now + 100 + 61
    answer = await introspect(texas, t)
    assert answer["active"] is False and answer["reason"] == "expired"
    assert len(introspector.cache) == 0, "an expired entry leaves the cache"


async def test_nbf_is_checked_on_every_hit(texas: Any, token: Any) -> None:
    # Accepted within the leeway, then the clock goes back: a cached entry is not a pass.
    introspector = texas.app[INTROSPECTOR]
    now = time.time()
    t = token(nbf=int(now) + 30)
    assert (await introspect(texas, t))["active"] is True
    introspector.clock = lambda: now - 60
    assert (await introspect(texas, t))["reason"] == "not_yet_valid"


async def test_entries_are_per_provider(texas: Any, issuer: FakeIssuer) -> None:
    # One token, valid for idporten; asked as tokenx it must get tokenx's verdict, not the
    # cached idporten one.
    t = sign(claims_for("idporten", issuer.issuer("idporten")), make_key("RS256", "key-1"))
    assert (await introspect(texas, t, "idporten"))["active"] is True
    assert (await introspect(texas, t, "tokenx"))["reason"] == "wrong_issuer"


async def test_a_changed_byte_is_a_different_token(texas: Any, token: Any) -> None:
    t = token()
    assert (await introspect(texas, t))["active"] is True
    head, payload, signature = t.split(".")
    flipped = f"{head}.{payload}.{signature[:-2]}{'A' if signature[-2] != 'A' else 'B'}{signature[-1]}"
    assert (await introspect(texas, flipped))["active"] is False


async def test_cached_token_turns_inactive_when_its_key_is_rotated_out(
    make_texas: Any, issuer: FakeIssuer, token: Any
) -> None:
    client = await make_texas(("idporten",))
    t = token()
    assert (await introspect(client, t))["active"] is True
    issuer.publish("idporten", public_jwk(make_key("RS256", "key-2"), "key-2"))
    for provider in client.app[INTROSPECTOR].providers:
        assert await provider.jwks.refresh("periodic")
    assert (await introspect(client, t))["reason"] == "unknown_key"


def entry(body_size: int = 900) -> Entry:
    return Entry(body=b"x" * body_size, key=None, times=Times(2e9, 1e9, None), acr=None)  # type: ignore[arg-type]


def key(n: int) -> bytes:
    return TokenCache.key("idporten", str(n))


def test_bounded_in_entries_least_recently_used_leave_first() -> None:
    cache = TokenCache(max_entries=3, max_bytes=10**9)
    for n in range(5):
        cache.put(key(n), entry())
    assert len(cache) == 3
    assert cache.get(key(0)) is None and cache.get(key(1)) is None and cache.get(key(4)) is not None


def test_a_hot_token_stays_while_cold_ones_leave() -> None:
    cache = TokenCache(max_entries=3, max_bytes=10**9)
    hot = key(0)
    cache.put(hot, entry())
    for n in range(1, 20):
        assert cache.get(hot) is not None, f"the hot token was evicted by insert {n}"
        cache.put(key(n), entry())
    assert cache.get(key(1)) is None


def test_byte_eviction_also_spares_the_recently_used() -> None:
    cache = TokenCache(max_entries=10**6, max_bytes=3 * 1300)
    hot = key(0)
    cache.put(hot, entry())
    for n in range(1, 20):
        assert cache.get(hot) is not None
        cache.put(key(n), entry())
    assert cache.size_bytes <= 3 * 1300


def test_bounded_in_bytes() -> None:
    cache = TokenCache(max_entries=10**6, max_bytes=10_000)
    for n in range(100):
        cache.put(key(n), entry(900))
    assert cache.size_bytes <= 10_000
    assert 0 < len(cache) <= 10_000 // 900


def test_an_entry_larger_than_the_budget_is_not_stored() -> None:
    cache = TokenCache(max_entries=10, max_bytes=1000)
    cache.put(key(1), entry(5000))
    assert len(cache) == 0 and cache.size_bytes == 0


def test_size_zero_turns_the_cache_off() -> None:
    cache = TokenCache(max_entries=0)
    cache.put(key(1), entry())
    assert cache.get(key(1)) is None and len(cache) == 0


def test_key_is_a_digest_of_the_provider_and_the_exact_token() -> None:
    assert TokenCache.key("idporten", "a.b.c") == hashlib.sha256(b"idporten\0a.b.c").digest()
    assert TokenCache.key("idporten", "a.b.c ") != TokenCache.key("idporten", "a.b.c")
    assert TokenCache.key("tokenx", "a.b.c") != TokenCache.key("idporten", "a.b.c")


class CountingCache(TokenCache):
    """The real cache, counting how often a token is digested for its key."""

    digests = 0

    @staticmethod
    def key(provider: str, token: str) -> bytes:
        CountingCache.digests += 1
        return TokenCache.key(provider, token)


async def test_an_overlong_token_is_refused_before_it_is_digested(texas: Any, token: Any) -> None:
    # Hashing a 1 MiB token cost 2.2 ms; the length check that refuses it costs nothing.
    introspector = texas.app[INTROSPECTOR]
    introspector.cache = CountingCache(max_entries=10)
    CountingCache.digests = 0
    answer = await introspect(texas, token() + "A" * 1_000_000)
    assert answer["reason"] == "malformed" and "longer" in answer["error"]
    answer = await introspect(texas, token() + "A" * 1_000_000, provider=None)
    assert answer["reason"] == "malformed" and "longer" in answer["error"]
    assert CountingCache.digests == 0
    assert (await introspect(texas, token()))["active"] is True
    assert CountingCache.digests == 1

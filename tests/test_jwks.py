"""Keys over time: a real JWKS server that the tests break and change, with every upstream
fetch counted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable

import aiohttp
import pytest

from tests.conftest import introspect
from tests.support import Clock, FakeIssuer, claims_for, make_key, public_jwk, sign
from texas.app import PROVIDERS
from texas.introspection.jwks import JwksSettings, RemoteJwks, _max_age

KEY1 = public_jwk(make_key("RS256", "key-1"), "key-1")
KEY2 = public_jwk(make_key("RS256", "key-2"), "key-2")


JwksFactory = Callable[..., RemoteJwks]


@pytest.fixture
def make_jwks(issuer: FakeIssuer, session: aiohttp.ClientSession) -> JwksFactory:
    made: list[RemoteJwks] = []

    def make(clock: Callable[[], float] = time.monotonic, **settings: float) -> RemoteJwks:
        async def locate() -> str:
            return issuer.jwks_uri("idporten")

        defaults = {"refresh": 300.0, "min_refresh": 30.0, "fetch_timeout": 2.0, "max_stale": 86400.0}
        jwks = RemoteJwks("idporten", locate, session, JwksSettings(**{**defaults, **settings}), clock=clock)
        made.append(jwks)
        return jwks

    return make


def fetches(issuer: FakeIssuer) -> int:
    return issuer.state["idporten"].jwks_fetches


async def test_held_kid_needs_no_fetch(make_jwks: JwksFactory, issuer: FakeIssuer) -> None:
    jwks = make_jwks()
    assert await jwks.refresh("startup")
    before = fetches(issuer)
    for _ in range(10):
        snapshot = await jwks.keys_for("key-1")
        assert snapshot is not None and snapshot.has_kid("key-1")
    assert fetches(issuer) == before


async def test_holding_answers_without_a_coroutine_only_for_a_held_kid(
    make_jwks: JwksFactory, issuer: FakeIssuer
) -> None:
    jwks = make_jwks()
    assert jwks.holding("key-1") is None, "no keys yet"
    assert await jwks.refresh("startup")
    before = fetches(issuer)
    snapshot = jwks.holding("key-1")
    assert snapshot is not None and snapshot is jwks.current()
    assert jwks.holding("unknown") is None
    assert fetches(issuer) == before, "holding never fetches"


async def test_unknown_kid_triggers_one_shared_refresh(make_jwks: JwksFactory, issuer: FakeIssuer) -> None:
    clock = Clock()
    jwks = make_jwks(clock)
    assert await jwks.refresh("startup")
    clock.now += 31  # the window is open again
    issuer.publish("idporten", KEY1, KEY2)
    before = fetches(issuer)
    results = await asyncio.gather(*(jwks.keys_for("key-2") for _ in range(50)))
    assert fetches(issuer) == before + 1
    assert all(r is not None and r.has_kid("key-2") for r in results)


async def test_distinct_unknown_kids_share_one_refresh(make_jwks: JwksFactory, issuer: FakeIssuer) -> None:
    clock = Clock()
    jwks = make_jwks(clock)
    assert await jwks.refresh("startup")
    clock.now += 31
    before = fetches(issuer)
    await asyncio.gather(*(jwks.keys_for(f"random-{i}") for i in range(200)))
    assert fetches(issuer) == before + 1


async def test_kid_unknown_after_a_refresh_is_remembered(make_jwks: JwksFactory, issuer: FakeIssuer) -> None:
    clock = Clock()
    jwks = make_jwks(clock)
    assert await jwks.refresh("startup")
    clock.now += 31
    await jwks.keys_for("ghost")
    after_refresh = fetches(issuer)
    clock.now += 31  # window open again, but the kid is still remembered as unknown
    clock.now -= 2
    for _ in range(100):
        await jwks.keys_for("ghost")
    assert fetches(issuer) == after_refresh
    assert jwks._trailing is None, "a remembered kid schedules nothing"


async def test_unknown_kid_in_closed_window_schedules_one_trailing_refresh(
    make_jwks: JwksFactory, issuer: FakeIssuer
) -> None:
    clock = Clock()
    jwks = make_jwks(clock)
    assert await jwks.refresh("startup")
    issuer.publish("idporten", KEY1, KEY2)
    before = fetches(issuer)
    clock.now += 30 - 0.05  # the window closes 50 ms from now: the trailing refresh waits that
    # Inside the window: answered at once, without the new key and without a fetch...
    for i in range(500):
        snapshot = await jwks.keys_for(f"flood-{i}")
        assert snapshot is not None and not snapshot.has_kid(f"flood-{i}")
    snapshot = await jwks.keys_for("key-2")
    assert snapshot is not None and not snapshot.has_kid("key-2")
    assert fetches(issuer) == before
    # ...and one trailing refresh at the window's end picks up the genuine new key.
    assert jwks._trailing is not None
    await jwks._trailing
    assert fetches(issuer) == before + 1
    snapshot = await jwks.keys_for("key-2")
    assert snapshot is not None and snapshot.has_kid("key-2")


async def test_no_trailing_refresh_after_a_fetch_that_already_looked(
    make_jwks: JwksFactory, issuer: FakeIssuer
) -> None:
    # A kid seen in the closed window schedules a trailing refresh; another unknown kid right
    # at the window's opening fetches first. The trailing one must not fetch again.
    clock = Clock()
    jwks = make_jwks(clock)
    assert await jwks.refresh("startup")
    before = fetches(issuer)
    clock.now += 30 - 0.05
    await jwks.keys_for("seen-in-the-closed-window")
    assert jwks._trailing is not None
    clock.now += 0.05
    await jwks.keys_for("seen-as-the-window-opens")
    assert fetches(issuer) == before + 1
    await jwks._trailing
    assert fetches(issuer) == before + 1, "two fetches in one window"


@pytest.mark.parametrize("mode", ["down", "garbage", "empty", "enc_only", "hang", "reset"])
async def test_failed_fetch_keeps_the_keys_held(
    make_jwks: JwksFactory, issuer: FakeIssuer, mode: str
) -> None:
    jwks = make_jwks(fetch_timeout=1)  # room for a busy machine; the hang outlasts it
    assert await jwks.refresh("startup")
    issuer.state["idporten"].mode = mode
    assert not await jwks.refresh("periodic")
    snapshot = jwks.current()
    assert snapshot is not None and snapshot.has_kid("key-1")
    assert jwks.last_error


async def test_held_kid_never_waits_on_a_hanging_fetch(make_jwks: JwksFactory, issuer: FakeIssuer) -> None:
    clock = Clock()
    jwks = make_jwks(clock, fetch_timeout=30)
    assert await jwks.refresh("startup")
    issuer.state["idporten"].mode = "hang"
    clock.now += 31
    before = fetches(issuer)
    waiting = asyncio.create_task(jwks.keys_for("new-kid"))  # joins a fetch that hangs
    while fetches(issuer) == before:  # until the issuer holds the hanging request
        await asyncio.sleep(0.01)
    # A coroutine that finishes on its first step never suspended: it waited on nothing.
    step = jwks.keys_for("key-1")
    with pytest.raises(StopIteration) as finished:
        step.send(None)
    snapshot = finished.value.value
    assert snapshot is not None and snapshot.has_kid("key-1")
    assert not waiting.done()
    waiting.cancel()
    await jwks.close()


async def test_removed_key_stops_validating_after_the_next_refresh(
    make_jwks: JwksFactory, issuer: FakeIssuer
) -> None:
    jwks = make_jwks()
    issuer.publish("idporten", KEY1, KEY2)
    assert await jwks.refresh("startup")
    issuer.publish("idporten", KEY2)
    assert await jwks.refresh("periodic")
    snapshot = jwks.current()
    assert snapshot is not None and not snapshot.has_kid("key-1") and snapshot.has_kid("key-2")


async def test_unchanged_key_set_is_confirmed_with_304(make_jwks: JwksFactory, issuer: FakeIssuer) -> None:
    jwks = make_jwks()
    assert await jwks.refresh("startup")
    first = jwks.current()
    for _ in range(3):
        assert await jwks.refresh("periodic")
    assert issuer.state["idporten"].jwks_304 == 3
    assert jwks.current() is first


async def test_a_304_to_an_unconditional_request_confirms_nothing(
    make_jwks: JwksFactory, issuer: FakeIssuer
) -> None:
    # Without ETag or Last-Modified texas sends no validator, so a 304 is not an answer to it.
    issuer.state["idporten"].etag = False
    clock = Clock()
    jwks = make_jwks(clock, refresh=10, min_refresh=1, max_stale=100)
    assert await jwks.refresh("startup")
    issuer.state["idporten"].mode = "not_modified"
    clock.now += 60
    assert not await jwks.refresh("periodic")
    assert "not conditional" in (jwks.last_error or "")
    assert jwks.age() == 60, "the keys were not confirmed"
    clock.now += 41
    assert jwks.current() is None, "max-stale drops keys that only unconditional 304s vouched for"


async def test_unchanged_keys_keep_their_identity_across_a_200(
    make_jwks: JwksFactory, issuer: FakeIssuer
) -> None:
    issuer.state["idporten"].etag = False
    jwks = make_jwks()
    assert await jwks.refresh("startup")
    key = jwks.current().candidates("key-1")[0]  # type: ignore[union-attr]
    assert await jwks.refresh("periodic")
    assert jwks.current().holds(key)  # type: ignore[union-attr]


async def test_keys_past_max_stale_are_dropped_and_recover(
    make_jwks: JwksFactory, issuer: FakeIssuer
) -> None:
    clock = Clock()
    jwks = make_jwks(clock, refresh=10, min_refresh=1, max_stale=100)
    assert await jwks.refresh("startup")
    issuer.state["idporten"].mode = "down"
    clock.now += 50
    assert not await jwks.refresh("periodic")
    assert jwks.current() is not None
    clock.now += 51
    assert jwks.current() is None
    assert await jwks.keys_for("key-1") is None
    issuer.state["idporten"].mode = "ok"
    assert await jwks.refresh("retry")
    assert jwks.current() is not None and issuer.state["idporten"].jwks_304 == 0, "no 304 without keys"


async def test_jwk_set_json_content_type_is_accepted(make_jwks: JwksFactory, issuer: FakeIssuer) -> None:
    issuer.state["idporten"].content_type = "application/jwk-set+json"
    assert await make_jwks().refresh("startup")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("max-age=2", 2.0),
        ("public, max-age=600", 600.0),
        ('max-age="30"', 30.0),
        ("no-cache", 0.0),
        ("no-store, max-age=60", 0.0),
        ("", None),
        ("s-maxage=5", None),
    ],
)
def test_cache_control_max_age(header: str, expected: float | None) -> None:
    assert _max_age(header) == expected


@pytest.mark.parametrize(
    ("max_age", "delay"),
    [("max-age=2", 30.0), ("max-age=100", 100.0), ("max-age=9999", 300.0), (None, 300.0)],
)
async def test_max_age_is_clamped_to_the_refresh_window(
    make_jwks: JwksFactory, issuer: FakeIssuer, max_age: str | None, delay: float
) -> None:
    issuer.state["idporten"].cache_control = max_age
    jwks = make_jwks()
    assert await jwks.refresh("startup")
    assert jwks._next_refresh_delay() == delay


async def test_max_age_drives_the_background_refresh(make_jwks: JwksFactory, issuer: FakeIssuer) -> None:
    issuer.state["idporten"].cache_control = "max-age=0"
    jwks = make_jwks(refresh=0.4, min_refresh=0.1)
    assert await jwks.refresh("startup")
    issuer.publish("idporten", KEY2)
    loop = asyncio.create_task(jwks.run(initial_done=True))
    try:
        for _ in range(40):
            await asyncio.sleep(0.05)
            if not jwks.current().has_kid("key-1"):  # type: ignore[union-attr]
                break
        assert not jwks.current().has_kid("key-1"), "removed key dropped by a periodic refresh"  # type: ignore[union-attr]
    finally:
        loop.cancel()


# --- through the service ------------------------------------------------------------------------


async def test_service_starts_without_keys_and_recovers(make_texas, issuer: FakeIssuer, token) -> None:
    issuer.state["idporten"].mode = "down"
    client = await make_texas(("idporten",), TEXAS_JWKS_FETCH_TIMEOUT_SECONDS="1")
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    assert body["status"] == "not_ready" and "idporten" in body["reason"]
    answer = await introspect(client, token())
    assert answer["active"] is False and answer["reason"] == "keys_unavailable"
    issuer.state["idporten"].mode = "ok"
    for _ in range(60):  # the background retry starts at 1 s
        await asyncio.sleep(0.1)
        if (await client.get("/readyz")).status == 200:
            break
    assert (await client.get("/readyz")).status == 200
    assert (await introspect(client, token()))["active"] is True


async def test_discovery_is_used_when_issuer_and_jwks_uri_are_not_explicit(
    make_texas, issuer: FakeIssuer, token
) -> None:
    client = await make_texas(discovery=True)
    for p in ("idporten", "tokenx"):
        assert (await introspect(client, token(p), p))["active"] is True
        assert issuer.state[p].discovery_fetches == 1


async def test_explicit_values_win_over_discovery(make_texas, issuer: FakeIssuer, token) -> None:
    client = await make_texas(("idporten",), discovery=True, IDPORTEN_ISSUER="https://explicit.example")
    assert (await introspect(client, token()))["reason"] == "wrong_issuer"
    assert (await introspect(client, token(iss="https://explicit.example")))["active"] is True


async def test_cached_token_turns_inactive_when_its_key_is_removed(
    make_texas, issuer: FakeIssuer, token
) -> None:
    issuer.publish("idporten", KEY1, KEY2)
    client = await make_texas(("idporten",))
    t = token()
    assert (await introspect(client, t))["active"] is True
    assert (await introspect(client, t))["active"] is True  # now from the cache
    issuer.publish("idporten", KEY2)
    for p in client.app[PROVIDERS]:
        assert await p.jwks.refresh("periodic")
    answer = await introspect(client, t)
    assert answer["active"] is False and answer["reason"] == "unknown_key"


async def test_flood_of_random_kids_costs_at_most_one_fetch_per_window(
    make_texas, issuer: FakeIssuer
) -> None:
    client = await make_texas(("idporten",), TEXAS_JWKS_MIN_REFRESH_SECONDS="30")
    before = fetches(issuer)
    attacker = make_key("RS256", "attacker")
    claims = claims_for("idporten", issuer.issuer("idporten"))
    tokens = [sign(claims, attacker, kid=uuid.uuid4().hex) for _ in range(300)]
    answers = await asyncio.gather(*(introspect(client, t) for t in tokens))
    assert all(a["reason"] == "unknown_key" for a in answers)
    # Start-up fetched moments ago, so the window is closed: nothing fetched yet, one trailing
    # refresh scheduled for the window's end.
    assert fetches(issuer) == before

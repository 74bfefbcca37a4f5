"""Prometheus metrics: module-level objects behind verb-named helpers.

Label values are always drawn from small fixed sets (provider names, reason codes, routes,
fetch triggers), never from request or token content.

Under gunicorn, prometheus-client's multiprocess mode is switched on by
PROMETHEUS_MULTIPROC_DIR (deploy/gunicorn.conf.py sets it); gauges then say how they are
combined across workers; gunicorn's child_exit hook (deploy/) drops dead workers' files.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

INTROSPECTIONS = Counter(
    "texas_introspections",
    "Introspection verdicts by provider and outcome (active or the inactive reason code).",
    ["provider", "outcome"],
)
REQUEST_DURATION = Histogram(
    "texas_http_request_duration_seconds",
    "Time to answer an HTTP request, by route.",
    ["route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
RESPONSES = Counter(
    "texas_http_responses",
    "HTTP responses by route and status code.",
    ["route", "code"],
)
IN_FLIGHT = Gauge(
    "texas_http_requests_in_flight",
    "HTTP requests being answered right now.",
    multiprocess_mode="livesum",
)
JWKS_FETCHES = Counter(
    "texas_jwks_fetches",
    "JWKS fetches by provider, what triggered them and their result (200, 304 or error).",
    ["provider", "trigger", "result"],
)
DISCOVERY_FETCHES = Counter(
    "texas_discovery_fetches",
    "OpenID discovery document fetches by provider and result (ok or error).",
    ["provider", "result"],
)
JWKS_LAST_SUCCESS = Gauge(
    "texas_jwks_last_success_timestamp_seconds",
    "Unix time of the last successful JWKS fetch (200 or 304); the oldest across workers.",
    ["provider"],
    multiprocess_mode="livemin",
)
JWKS_KEYS = Gauge(
    "texas_jwks_keys",
    "Signing keys held, by provider; the fewest across workers.",
    ["provider"],
    multiprocess_mode="livemin",
)
TOKEN_CACHE_LOOKUPS = Counter(
    "texas_token_cache_lookups",
    "Verified-token cache lookups by result (hit or miss).",
    ["result"],
)
TOKEN_CACHE_ENTRIES = Gauge(
    "texas_token_cache_entries",
    "Verified tokens held in the cache, summed across workers.",
    multiprocess_mode="livesum",
)

TOKEN_REQUESTS = Counter(
    "texas_token_requests",
    "Token requests (/api/v1/token, /token/exchange) by endpoint, provider and outcome "
    "(ok, invalid_request, refused, server_error).",
    ["endpoint", "provider", "outcome"],
)
GRANT_CACHE_LOOKUPS = Counter(
    "texas_grant_cache_lookups",
    "Issued-token cache lookups by endpoint and result (hit, ahead: a hit that started a "
    "background renewal, miss, skip: skip_cache).",
    ["endpoint", "result"],
)
GRANT_CACHE_ENTRIES = Gauge(
    "texas_grant_cache_entries",
    "Issued tokens held in the cache, summed across workers.",
    multiprocess_mode="livesum",
)
GRANT_CACHE_BYTES = Gauge(
    "texas_grant_cache_bytes",
    "Bytes of issued tokens held in the cache (estimated), summed across workers.",
    multiprocess_mode="livesum",
)
GRANT_STALE_SERVED = Counter(
    "texas_grant_stale_served",
    "Cached tokens served because the identity provider could not be reached or failed.",
    ["provider"],
)
GRANT_REFRESHES = Counter(
    "texas_grant_refreshes",
    "Background renewals of machine tokens asked for inside their margin, by result.",
    ["provider", "result"],
)
GRANT_RETRIES = Counter(
    "texas_grant_retries",
    "Token requests to an identity provider retried after a connection error, 5xx or 429.",
    ["provider"],
)
GRANT_UPSTREAM_DURATION = Histogram(
    "texas_grant_upstream_duration_seconds",
    "Time of one token request to an identity provider, by provider and result (ok, refused: "
    "its OAuth error, error: unreachable, timed out, 5xx, 429 or nonsense).",
    ["provider", "result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
INTERNAL_ERRORS = Counter(
    "texas_internal_errors",
    "Faults inside texas: unexpected exceptions while answering, by route.",
    ["route"],
)

STALENESS_NAME = "texas_jwks_staleness_seconds"


def multiprocess_enabled() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


# --- what every request counts: kept in plain numbers, written out in batches ------------------
#
# prometheus-client takes a lock for each update, and in multiprocess mode also calls getpid()
# and writes an mmap'd file: a request's five updates (in flight up and down, latency, response
# code, verdict, cache lookup) cost about 37,000 instructions under callgrind, 60,000 under
# gunicorn, a quarter of what texas added to a cached verdict. So a request adds to the plain
# numbers below, and `flush()` writes their sums into prometheus-client: before every scrape of
# this process (`render`) and, in multiprocess mode, where other workers read this one's files,
# also once per event-loop iteration that counted something. A scrape thus sees every request
# answered, as before. Memory: a few numbers per label set, and the label sets are fixed.

_in_flight = 0  # requests being answered now
_in_flight_written = 0
_durations: dict[str, list[int]] = {}  # route -> observations per histogram bucket
_seconds: dict[str, float] = {}  # route -> sum of the observed durations
_responses: dict[tuple[str, int], int] = {}
_introspections: dict[tuple[str, str], int] = {}
_lookups = {"hit": 0, "miss": 0}
_cache_entries: int | None = None  # the latest count, until written
_DURATION_BOUNDS = tuple(REQUEST_DURATION._upper_bounds)  # prometheus-client's own, +Inf last
_children: dict[tuple[object, ...], Any] = {}  # labels() takes a lock and builds a tuple each call
# prometheus-client chooses its mode at import, from the environment; so does this
_MULTIPROCESS = multiprocess_enabled()
# True while a request's counts must schedule a flush: multiprocess mode, none scheduled yet
_schedule = _MULTIPROCESS


def request_started() -> None:
    global _in_flight
    _in_flight += 1
    if _schedule:
        _schedule_flush()


def request_finished() -> None:
    global _in_flight
    _in_flight -= 1
    if _schedule:
        _schedule_flush()


def observe_request(route: str, code: int, seconds: float) -> None:
    """One answered request: its route's latency and status code."""
    buckets = _durations.get(route)
    if buckets is None:
        buckets = _durations[route] = [0] * len(_DURATION_BOUNDS)
        _seconds[route] = 0.0
    buckets[bisect_left(_DURATION_BOUNDS, seconds)] += 1  # the first bucket with seconds <= le
    _seconds[route] += seconds
    key = (route, code)
    _responses[key] = _responses.get(key, 0) + 1
    if _schedule:
        _schedule_flush()


def inc_introspection(provider: str, outcome: str) -> None:
    key = (provider, outcome)
    _introspections[key] = _introspections.get(key, 0) + 1
    if _schedule:
        _schedule_flush()


def inc_token_cache(hit: bool) -> None:
    _lookups["hit" if hit else "miss"] += 1
    if _schedule:
        _schedule_flush()


def set_token_cache_entries(entries: int) -> None:
    global _cache_entries
    _cache_entries = entries
    if _schedule:
        _schedule_flush()


def flush() -> None:
    """Write the counts kept since the last flush into prometheus-client."""
    global _schedule, _in_flight_written, _cache_entries
    _schedule = _MULTIPROCESS
    if _in_flight != _in_flight_written:
        IN_FLIGHT.set(_in_flight)
        _in_flight_written = _in_flight
    for route, buckets in _durations.items():
        if any(buckets):
            histogram = _child(REQUEST_DURATION, route)
            # prometheus-client has no call that adds many observations: add to its own values
            for value, count in zip(histogram._buckets, buckets, strict=True):
                if count:
                    value.inc(count)
            histogram._sum.inc(_seconds[route])
            _durations[route] = [0] * len(_DURATION_BOUNDS)
            _seconds[route] = 0.0
    for (route, code), count in _responses.items():
        _child(RESPONSES, route, str(code)).inc(count)
    _responses.clear()
    for (provider, outcome), count in _introspections.items():
        _child(INTROSPECTIONS, provider, outcome).inc(count)
    _introspections.clear()
    for result, count in _lookups.items():
        if count:
            _child(TOKEN_CACHE_LOOKUPS, result).inc(count)
            _lookups[result] = 0
    if _cache_entries is not None:
        TOKEN_CACHE_ENTRIES.set(_cache_entries)
        _cache_entries = None


def _schedule_flush() -> None:
    """In multiprocess mode: one flush after this event-loop iteration (or at once outside a
    loop). One process needs none: its scrapes flush."""
    global _schedule
    _schedule = False
    try:
        asyncio.get_running_loop().call_soon(flush)
    except RuntimeError:
        flush()


def _child(metric: Any, *labels: str) -> Any:
    key = (metric, *labels)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*labels)
    return child


def internal_errors(route: str) -> Any:
    """The route's internal-error counter, created (at 0) when the route is, so that an
    alert on its increase sees the first fault."""
    return INTERNAL_ERRORS.labels(route)


def inc_jwks_fetch(provider: str, trigger: str, result: str) -> None:
    JWKS_FETCHES.labels(provider, trigger, result).inc()


def inc_discovery_fetch(provider: str, result: str) -> None:
    DISCOVERY_FETCHES.labels(provider, result).inc()


def set_jwks_state(provider: str, keys: int, last_success: float | None) -> None:
    """Record what a provider holds; `last_success` is Unix time, None before the first."""
    JWKS_KEYS.labels(provider).set(keys)
    JWKS_LAST_SUCCESS.labels(provider).set(last_success if last_success is not None else 0)


_token_requests: dict[tuple[str, str, str], Any] = {}
_grant_cache: dict[tuple[str, str], Any] = {}


def inc_token_request(endpoint: str, provider: str, outcome: str) -> None:
    child = _token_requests.get((endpoint, provider, outcome))
    if child is None:
        child = _token_requests[(endpoint, provider, outcome)] = TOKEN_REQUESTS.labels(
            endpoint, provider, outcome
        )
    child.inc()


def inc_grant_cache(endpoint: str, result: str) -> None:
    child = _grant_cache.get((endpoint, result))
    if child is None:
        child = _grant_cache[(endpoint, result)] = GRANT_CACHE_LOOKUPS.labels(endpoint, result)
    child.inc()


def set_grant_cache(entries: int, size_bytes: int) -> None:
    GRANT_CACHE_ENTRIES.set(entries)
    GRANT_CACHE_BYTES.set(size_bytes)


def inc_grant_stale(provider: str) -> None:
    GRANT_STALE_SERVED.labels(provider).inc()


def inc_grant_refresh(provider: str, result: str) -> None:
    GRANT_REFRESHES.labels(provider, result).inc()


def inc_grant_retry(provider: str) -> None:
    GRANT_RETRIES.labels(provider).inc()


def observe_grant_upstream(provider: str, result: str, seconds: float) -> None:
    GRANT_UPSTREAM_DURATION.labels(provider, result).observe(seconds)


def _staleness(families: Iterable[Metric], now: float) -> Metric:
    """Age of each provider's keys, derived from the (combined) last-success gauge at scrape
    time, so that it is right however many workers there are."""
    out = GaugeMetricFamily(
        STALENESS_NAME,
        "Seconds since the last successful JWKS fetch, by provider (the stalest worker); "
        "-1 before the first success.",
        labels=["provider"],
    )
    for family in families:
        if family.name != JWKS_LAST_SUCCESS._name:
            continue
        for sample in family.samples:
            provider = sample.labels.get("provider")
            if provider is None:
                continue
            age = now - sample.value if sample.value > 0 else -1.0
            out.add_metric([provider], age)
    return out


class _Collected(Collector):
    """Families collected already, handed to `generate_latest` through a registry."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def render() -> bytes:
    """The Prometheus text exposition of this process, or of every worker in multiprocess
    mode."""
    flush()
    if multiprocess_enabled():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        families = list(registry.collect())
    else:
        families = list(REGISTRY.collect())
    families.append(_staleness(families, time.time()))
    output = CollectorRegistry(auto_describe=False)
    output.register(_Collected(families))
    return generate_latest(output)

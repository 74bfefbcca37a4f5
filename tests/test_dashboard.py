"""deploy/grafana-dashboard.json against a real Prometheus scraping texas as deployed.

texas runs under gunicorn with two workers (deploy/gunicorn.conf.py), its keys from the dev
identity provider (texas.devidp) on a local port. A real Prometheus, started by the test on
loopback with its own config, scrapes texas's probe address every second and labels the
series as a pod scrape does (namespace, app, pod). The test sends real traffic, step by step
(`STEPS`), then asks Prometheus's HTTP API every query of the dashboard, with the template
variables filled in from their own queries: each must return data, carrying every label its
legend shows. A wrong metric name, a wrong label or a typo in a function fails the test
naming the panel. The same Prometheus evaluates the alert rules of deploy/prometheusrule.yaml
on the real series, each of which must evaluate without an error.

To add traffic, add a `Step` to `STEPS`: an async function that sends requests through
`Traffic` and asserts their answers, and the PromQL that must return data after it. The token
requests (machine tokens, exchanges, cache hits, skip_cache, an outage of the identity
provider's token endpoints, refresh ahead) are answered by the dev identity provider with the
client keys `dev_environment` hands texas; its Maskinporten tokens live only a few seconds here
(`TOKEN_LIFETIMES`), so that texas's refresh ahead starts within seconds.

The live test is skipped when Debian's `prometheus` package is not installed, except under CI
(CI set), where it must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpServer

from tests.support import (
    ROOT,
    exported_metrics,
    exported_series,
    free_port,
    installed,
    make_key,
    requires_tool,
    running_gunicorn,
    sign,
)
from texas.devidp.http import create_devidp_app
from texas.devidp.issuer import PROVIDERS, DevIdentityProvider, dev_environment

DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
RULES = ROOT / "deploy" / "prometheusrule.yaml"
INTROSPECT = "/api/v1/introspect"
TOKEN = "/api/v1/token"
EXCHANGE = "/api/v1/token/exchange"

# What a Kubernetes pod scrape (kubernetes_sd and the usual relabelling) puts on every series.
TARGET_LABELS = {"namespace": "team", "app": "myapp", "pod": "myapp-0"}
# Grafana's own variables. Every rate window spans the whole test, so that each rate sees all
# the traffic however slowly a loaded machine sends it.
GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "15s", "__range": "5m"}
# Keys refreshed every second, dropped after 6 s without a successful fetch: an outage shows
# within seconds, and a healthy refresh has 5 s of slack on a busy machine.
TUNING = {
    "TEXAS_JWKS_REFRESH_SECONDS": "1",
    "TEXAS_JWKS_MIN_REFRESH_SECONDS": "1",
    "TEXAS_JWKS_MAX_STALE_SECONDS": "6",
    "TEXAS_JWKS_FETCH_TIMEOUT_SECONDS": "2",
}
# texas renews a machine token in the background when it is asked for in its last margin: half
# the lifetime for tokens that live 120 s or less, so 3 s here instead of a minute.
TOKEN_LIFETIMES = {"maskinporten": 6}
T = TypeVar("T")
DEADLINE = 60.0  # seconds for anything to show up; only a failing test waits this long
POLL = 0.25


async def eventually(check: Callable[[], Awaitable[T]], what: str, timeout: float = DEADLINE) -> T:
    """The first truthy result of `check`, polled until `timeout`."""
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        await asyncio.sleep(POLL)
    return result


# --- Prometheus ---------------------------------------------------------------------------------


class PrometheusError(AssertionError):
    """Prometheus refused a query (it does not parse, or cannot be evaluated)."""


@dataclass
class Prometheus:
    """Prometheus's HTTP API (https://prometheus.io/docs/prometheus/latest/querying/api/)."""

    url: str
    session: aiohttp.ClientSession

    async def get(self, path: str, **params: str) -> Any:
        async with self.session.get(f"{self.url}{path}", params=params) as r:
            body = await r.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    async def value(self, expr: str) -> float | None:
        result = await self.query(expr)
        return float(result[0]["value"][1]) if result else None

    async def label_values(self, label: str, selector: str) -> list[str]:
        return list(await self.get(f"/api/v1/label/{label}/values", **{"match[]": selector}))

    async def metric_names(self) -> set[str]:
        return set(await self.get("/api/v1/label/__name__/values"))


async def _ready(url: str, session: aiohttp.ClientSession) -> bool:
    with contextlib.suppress(aiohttp.ClientError):
        async with session.get(f"{url}/-/ready") as r:
            return r.status == 200
    return False


@contextlib.asynccontextmanager
async def running_prometheus(
    directory: Path, target: str, rule_groups: Mapping[str, Any]
) -> AsyncIterator[Prometheus]:
    """Prometheus on a free loopback port, scraping `target` (host:port) and evaluating
    `rule_groups` every second."""
    directory.mkdir()
    (directory / "rules.yml").write_text(yaml.safe_dump(dict(rule_groups), sort_keys=False))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules.yml"],
        "scrape_configs": [
            {"job_name": "texas", "static_configs": [{"targets": [target], "labels": TARGET_LABELS}]}
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{free_port()}"
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                installed("prometheus"),
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address={url.removeprefix('http://')}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

            async def ready() -> bool:
                assert process.poll() is None, f"prometheus exited:\n{log.read_text()[-3000:]}"
                return await _ready(url, session)

            await eventually(ready, "ready Prometheus")
            yield Prometheus(url, session)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# --- traffic ------------------------------------------------------------------------------------


@dataclass
class IssuerSwitch:
    """Takes the dev identity provider down (every request answered 503), or only its token
    endpoints, and back up."""

    down: bool = False
    tokens_down: bool = False

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.down or (self.tokens_down and request.path.endswith("/token")):
            return web.Response(status=503, text="identity provider down")
        response: web.StreamResponse = await handler(request)
        return response


@dataclass
class Traffic:
    """What a step sends through: texas's API, the identity provider, its on/off switch."""

    session: aiohttp.ClientSession
    texas: str
    idp: DevIdentityProvider
    issuer: IssuerSwitch
    introspections: int = 0  # answered, so also counted by texas
    token_requests: int = 0  # the same

    async def post(self, path: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST a JSON body to texas's API: the status and the JSON answer."""
        async with self.session.post(f"{self.texas}{path}", json=body) as r:
            answer: dict[str, Any] = await r.json(content_type=None)
            return r.status, answer

    async def introspect(self, provider: str, token: str, **fields: str) -> dict[str, Any]:
        status, answer = await self.post(
            INTROSPECT, {"identity_provider": provider, "token": token, **fields}
        )
        assert status == 200, answer
        self.introspections += 1
        return answer

    async def verdict(self, provider: str, token: str, **fields: str) -> str:
        """`active`, or the inactive answer's reason."""
        answer = await self.introspect(provider, token, **fields)
        return "active" if answer["active"] else str(answer["reason"])

    async def until_verdict(self, verdict: str, provider: str, times: int = 1) -> None:
        """Introspect freshly minted tokens (never answered from texas's cache) until `times`
        answers in a row are `verdict`: with two workers, a row that long has met both."""

        async def check() -> bool:
            for _ in range(times):
                if await self.verdict(provider, self.idp.mint(provider).access_token) != verdict:
                    return False
            return True

        await eventually(check, f"{times} {verdict} answers in a row for {provider}")

    async def token(self, path: str, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        status, answer = await self.post(path, body)
        self.token_requests += 1
        return status, answer

    async def issued(self, path: str, body: Mapping[str, Any]) -> str:
        """The access token texas answers with; anything but 200 fails."""
        status, answer = await self.token(path, body)
        assert status == 200, answer
        assert answer["token_type"] == "Bearer" and answer["expires_in"] > 0, answer
        return str(answer["access_token"])

    async def until_cached(self, path: str, body: Mapping[str, Any]) -> str:
        """Ask for the same token until texas answers with one it gave before: served from a
        worker's cache (the identity provider issues a new token, new `jti`, each time)."""
        seen: set[str] = set()

        async def repeated() -> str | None:
            token = await self.issued(path, body)
            if token in seen:
                return token
            seen.add(token)
            return None

        return await eventually(repeated, f"a cached answer from {path} for {dict(body)}")

    async def metric(self, name: str, **labels: str) -> float:
        """The sum of texas's own samples of `name` with `labels`, across both workers."""
        async with self.session.get(f"{self.texas}/metrics") as r:
            assert r.status == 200
            text = await r.text()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )


@dataclass(frozen=True)
class Step:
    """Traffic to send, and PromQL that must return data once it has been sent."""

    name: str
    send: Callable[[Traffic], Awaitable[None]]
    shows: tuple[str, ...] = field(default=())


async def active_tokens(t: Traffic) -> None:
    for provider in PROVIDERS:
        token = t.idp.mint(provider).access_token
        for _ in range(5):  # repeats are answered from the verified-token cache
            assert await t.verdict(provider, token) == "active"


async def inactive_tokens(t: Traffic) -> None:
    forged = sign(
        t.idp.mint("tokenx").claims, make_key("RS256", "attacker"), kid=t.idp.current_kid
    )  # the right kid, the wrong key
    cases = [
        ("idporten", t.idp.mint("idporten", expires_in=-3600).access_token, {}, "expired"),
        ("azuread", t.idp.mint("azuread", {"aud": "someone-else"}).access_token, {}, "wrong_audience"),
        ("tokenx", forged, {}, "bad_signature"),
        ("maskinporten", "not-a-jwt", {}, "malformed"),
        (
            "idporten",
            t.idp.mint("idporten", level="idporten-loa-substantial").access_token,
            {"level": "idporten-loa-high"},
            "insufficient_level",
        ),
        ("keycloak", "x.y.z", {}, "unknown_provider"),
    ]
    for provider, token, fields, reason in cases:
        for _ in range(3):
            assert await t.verdict(provider, token, **fields) == reason, provider


async def jwks_outage(t: Traffic) -> None:
    t.issuer.down = True
    await t.until_verdict("keys_unavailable", "idporten")


async def issuer_back(t: Traffic) -> None:
    t.issuer.down = False
    for provider in PROVIDERS:
        await t.until_verdict("active", provider, times=6)


async def machine_tokens(t: Traffic) -> None:
    for body in (
        {"identity_provider": "maskinporten", "target": "nav:test/api"},
        {"identity_provider": "azuread", "target": "api://dev-gcp.team.api/.default"},
    ):
        cached = await t.until_cached(TOKEN, body)
        assert await t.issued(TOKEN, body | {"skip_cache": True}) != cached


async def exchanges(t: Traffic) -> None:
    for body in (
        {
            "identity_provider": "tokenx",
            "target": "dev-gcp:team:api",
            "user_token": t.idp.mint("idporten").access_token,
        },
        {
            "identity_provider": "azuread",
            "target": "api://dev-gcp.team.api/.default",
            "user_token": t.idp.mint("azuread").access_token,
        },
    ):
        await t.until_cached(EXCHANGE, body)


async def refused_token_requests(t: Traffic) -> None:
    status, answer = await t.token(TOKEN, {"identity_provider": "maskinporten"})
    assert (status, answer["error"]) == (400, "invalid_request"), answer
    # the identity provider's own OAuth error, passed on
    status, answer = await t.token(TOKEN, {"identity_provider": "azuread", "target": "not-a-scope"})
    assert (status, answer["error"]) == (400, "invalid_scope"), answer


async def background_renewals(t: Traffic) -> None:
    body = {"identity_provider": "maskinporten", "target": "nav:test/renewed"}

    async def renewed() -> bool:
        await t.issued(TOKEN, body)
        return await t.metric("texas_grant_refreshes_total", provider="maskinporten", result="ok") > 0

    await eventually(renewed, "a background renewal of a Maskinporten token")


OUTAGE_TARGET = {"identity_provider": "azuread", "target": "api://dev-gcp.team.outage/.default"}
NEVER_CACHED = {"identity_provider": "azuread", "target": "api://dev-gcp.team.uncached/.default"}


async def token_endpoint_outage(t: Traffic) -> None:
    await t.until_cached(TOKEN, OUTAGE_TARGET)
    t.issuer.tokens_down = True
    status, answer = await t.token(TOKEN, NEVER_CACHED)  # retried, then given up
    assert (status, answer["error"]) == (502, "server_error"), answer

    async def served_stale() -> bool:
        # A fresh token is asked for and cannot be had: the cached one (an hour left) is
        # served; a worker that never cached it answers 502.
        status, answer = await t.token(TOKEN, OUTAGE_TARGET | {"skip_cache": True})
        assert status in (200, 502), answer
        return status == 200

    await eventually(served_stale, "a cached token served through the outage")


async def token_endpoint_back(t: Traffic) -> None:
    t.issuer.tokens_down = False
    await t.issued(TOKEN, NEVER_CACHED)


STEPS = (
    Step(
        "active tokens",
        active_tokens,
        ('texas_introspections_total{outcome="active"}', 'texas_token_cache_lookups_total{result="hit"}'),
    ),
    Step(
        "inactive tokens",
        inactive_tokens,
        tuple(
            f'texas_introspections_total{{outcome="{reason}"}}'
            for reason in ("expired", "wrong_audience", "bad_signature", "malformed", "insufficient_level")
        ),
    ),
    Step(
        "machine tokens",
        machine_tokens,
        (
            'texas_token_requests_total{endpoint="token", provider="maskinporten", outcome="ok"}',
            'texas_token_requests_total{endpoint="token", provider="azuread", outcome="ok"}',
            'texas_grant_cache_lookups_total{endpoint="token", result="hit"}',
            'texas_grant_cache_lookups_total{endpoint="token", result="skip"}',
            'texas_grant_upstream_duration_seconds_count{provider="maskinporten", result="ok"}',
            "texas_grant_cache_entries > 0",
            "texas_grant_cache_bytes > 0",
        ),
    ),
    Step(
        "exchanges",
        exchanges,
        (
            'texas_token_requests_total{endpoint="exchange", provider="tokenx", outcome="ok"}',
            'texas_token_requests_total{endpoint="exchange", provider="azuread", outcome="ok"}',
            'texas_grant_cache_lookups_total{endpoint="exchange", result="hit"}',
        ),
    ),
    Step(
        "refused token requests",
        refused_token_requests,
        (
            'texas_token_requests_total{outcome="invalid_request"}',
            'texas_token_requests_total{provider="azuread", outcome="refused"}',
            'texas_grant_upstream_duration_seconds_count{provider="azuread", result="refused"}',
        ),
    ),
    Step(
        "background renewals",
        background_renewals,
        (
            'texas_grant_cache_lookups_total{endpoint="token", result="ahead"}',
            'texas_grant_refreshes_total{provider="maskinporten", result="ok"}',
        ),
    ),
    Step(
        "token endpoint outage",
        token_endpoint_outage,
        (
            'texas_token_requests_total{provider="azuread", outcome="server_error"}',
            'texas_grant_upstream_duration_seconds_count{provider="azuread", result="error"}',
            'texas_grant_retries_total{provider="azuread"}',
            'texas_grant_stale_served_total{provider="azuread"}',
        ),
    ),
    Step("token endpoint back", token_endpoint_back),
    Step(
        "JWKS outage",
        jwks_outage,
        (
            'texas_introspections_total{outcome="keys_unavailable"}',
            'texas_jwks_fetches_total{result="error"}',
        ),
    ),
    Step(
        "identity provider back",
        issuer_back,
        (
            "texas_jwks_staleness_seconds >= 0",
            # Nothing above is a fault inside texas. Each route's counter exists at 0 from the
            # start, so the dashboard's internal-error series has data without a fault.
            "sum(texas_internal_errors_total) == 0",
        ),
    ),
)


# --- the dashboard ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str
    legend: str


def _all_panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # collapsed rows nest their panels
    return [p for panel in panels for p in (panel, *_all_panels(panel.get("panels", [])))]


def panel_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    return [
        Query(panel["title"], target.get("refId", ""), target["expr"], target.get("legendFormat", ""))
        for panel in _all_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
    ]


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)\s*$", re.DOTALL)
_LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
# Values joined into a `=~` regex as Grafana does for a multi-value variable; these need no escape.
_PLAIN_VALUE = re.compile(r"[\w.:/-]+")


def substitute(expr: str, values: Mapping[str, str], where: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        assert name in values, f"{where}: the test does not know the variable ${name}"
        return values[name]

    return _VARIABLE.sub(value, expr)


async def variable_values(prometheus: Prometheus, dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Each template variable resolved by its own query, as Grafana fills its drop-downs; all
    values selected."""
    values = dict(GRAFANA_VARIABLES)
    for variable in dashboard.get("templating", {}).get("list", []):
        name, kind = variable["name"], variable["type"]
        if kind == "datasource":
            continue
        assert kind == "query", f"variable {name!r}: the test does not know variables of type {kind}"
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        match = _LABEL_VALUES.match(query)
        assert match, f"variable {name!r}: the test knows only label_values(selector, label), not {query}"
        selector = substitute(match["selector"], values, f"variable {name!r}")
        found = await eventually(
            lambda label=match["label"], selector=selector: prometheus.label_values(label, selector),
            f"values for variable {name!r} from {query}",
        )
        assert all(_PLAIN_VALUE.fullmatch(v) for v in found), (name, found)
        values[name] = "|".join(sorted(found))
    return values


async def check_query(
    prometheus: Prometheus, query: Query, values: Mapping[str, str], timeout: float = DEADLINE
) -> None:
    """The query returns at least one finite value, and every series it returns carries the
    labels its legend shows."""
    where = f"panel {query.panel!r}, query {query.ref}"
    expr = substitute(query.expr, values, where)
    legend = set(_LEGEND_LABEL.findall(query.legend))
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = await prometheus.query(expr)
        except PrometheusError as e:
            raise AssertionError(f"{where}: Prometheus refuses {expr}\n  {e}") from None
        unlabelled = [s["metric"] for s in result if not legend <= s["metric"].keys()]
        finite = [s for s in result if math.isfinite(float(s["value"][1]))]
        if finite and not unlabelled:
            return
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(POLL)
    if unlabelled:
        missing = sorted(legend - set().union(*(m.keys() for m in unlabelled)))
        raise AssertionError(
            f"{where}: series without {missing}, which the legend {query.legend!r} shows: "
            f"{unlabelled[0]}\n  {expr}"
        )
    message = f"{where}: no data within {timeout:g} s from\n  {expr}"
    unseen = set(re.findall(r"\btexas_\w+", expr)) - await prometheus.metric_names()
    exported = exported_series()
    if unknown := sorted(unseen - exported.keys()):
        message += f"\n  texas exports no {', '.join(unknown)}"
    if quiet := sorted(unseen & exported.keys()):
        message += f"\n  no series of {', '.join(quiet)} yet: no traffic step makes texas export it (STEPS)"
    if result:
        message += f"\n  only NaN or infinite values: {result[:3]}"
    raise AssertionError(message)


async def check_all(prometheus: Prometheus, queries: list[Query], values: Mapping[str, str]) -> None:
    """Every query checked at once, every failure reported."""
    outcomes = await asyncio.gather(
        *(check_query(prometheus, query, values) for query in queries), return_exceptions=True
    )
    failures = [str(outcome) for outcome in outcomes if outcome is not None]
    assert not failures, "\n".join(failures)


async def check_rules(prometheus: Prometheus, alerts: set[str], since: float) -> None:
    """Every alert rule evaluated after `since` on texas's real series, without an error (a
    many-to-many match, say, which synthetic unit-test series may not show)."""

    async def evaluated() -> list[dict[str, Any]]:
        groups = (await prometheus.get("/api/v1/rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        done = all(datetime.fromisoformat(rule["lastEvaluation"]).timestamp() > since for rule in rules)
        return rules if rules and done else []

    rules = await eventually(evaluated, "evaluation of every alert rule")
    assert {rule["name"] for rule in rules} == alerts
    assert {rule["name"]: rule.get("lastError") for rule in rules if rule["health"] != "ok"} == {}


# --- the tests ----------------------------------------------------------------------------------


def test_dashboard_shows_every_texas_metric() -> None:
    exprs = [query.expr for query in panel_queries(json.loads(DASHBOARD.read_text()))]

    def shown(series: str) -> bool:
        name = re.compile(rf"(?<![\w:]){re.escape(series)}(?![\w:])")
        return any(name.search(expr) for expr in exprs)

    missing = {family for family, series in exported_metrics().items() if not any(map(shown, series))}
    assert missing == set()


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = _all_panels(dashboard["panels"])
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["type"] == "prometheus"


@pytest.mark.prometheus
@requires_tool("prometheus", "apt-get install prometheus")
async def test_dashboard_queries_and_alert_rules_work_on_a_real_scrape(
    tmp_path: Path, aiohttp_server: AiohttpServer
) -> None:
    switch = IssuerSwitch()
    idp = DevIdentityProvider("http://placeholder.invalid")
    idp_app = create_devidp_app(idp, token_lifetimes=TOKEN_LIFETIMES)
    idp_app.middlewares.append(switch.middleware)
    idp_server = await aiohttp_server(idp_app, host="127.0.0.1")
    idp.base_url = str(idp_server.make_url("")).rstrip("/")

    api, probes = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    environ = {
        **dev_environment(idp.base_url, idp.clients),
        **TUNING,
        "BIND_ADDRESS": api,
        "PROBE_BIND_ADDRESS": probes,
    }
    (tmp_path / "texas").mkdir()
    (rule_file,) = [doc for doc in yaml.safe_load_all(RULES.read_text()) if doc is not None]
    rule_groups = rule_file["spec"]
    alerts = [rule["alert"] for group in rule_groups["groups"] for rule in group["rules"]]
    async with (
        running_gunicorn(tmp_path / "texas", environ) as texas,
        running_prometheus(tmp_path / "prometheus", probes, rule_groups) as prometheus,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
    ):

        async def scraped() -> bool:
            return await prometheus.value('up{job="texas"}') == 1

        await eventually(scraped, "successful scrape of texas")
        traffic = Traffic(session, texas.url, idp, switch)
        for step in STEPS:
            await step.send(traffic)

        # Prometheus has scraped everything sent, summed across both workers.
        async def all_counted() -> bool:
            return (
                await prometheus.value("sum(texas_introspections_total)") == traffic.introspections
                and await prometheus.value("sum(texas_token_requests_total)") == traffic.token_requests
            )

        await eventually(
            all_counted,
            f"count of {traffic.introspections} introspections and {traffic.token_requests} token "
            "requests in Prometheus",
        )
        shown = [Query(f"(step {step.name})", "-", expr, "") for step in STEPS for expr in step.shows]
        await check_all(prometheus, shown, {})

        dashboard = json.loads(DASHBOARD.read_text())
        values = await variable_values(prometheus, dashboard)
        assert set(values["provider"].split("|")) == set(PROVIDERS)
        await check_all(prometheus, panel_queries(dashboard), values)
        await check_rules(prometheus, set(alerts), since=time.time())

        # The check itself: a metric texas does not export, a legend label that the query drops,
        # and a query Prometheus refuses each fail naming the panel.
        with pytest.raises(AssertionError, match=r"(?s)panel 'Typo', query A: no data .*texas exports no "):
            await check_query(
                prometheus,
                Query("Typo", "A", "sum(rate(texas_introspection_total[$__rate_interval]))", ""),
                values,
                timeout=1,
            )
        with pytest.raises(
            AssertionError, match=r"panel 'Lost label', query B: series without \['provider'\]"
        ):
            await check_query(
                prometheus,
                Query("Lost label", "B", "sum by (outcome) (texas_introspections_total)", "{{provider}}"),
                values,
                timeout=1,
            )
        with pytest.raises(AssertionError, match=r"panel 'Bad', query C: Prometheus refuses"):
            await check_query(prometheus, Query("Bad", "C", "sum(rate(texas_jwks_keys))", ""), values)

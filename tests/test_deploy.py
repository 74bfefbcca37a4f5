"""deploy/: the files parse, the gunicorn config sets what it should, the health check works
against a real server, and every metric the alerts and the dashboard query is one texas
exports (names taken from texas.ops.telemetry itself, not from a list kept by hand)."""

import asyncio
import collections.abc
import json
import logging
import os
import re
import runpy
import tempfile
import tomllib
import types
from pathlib import Path
from typing import Any

import aiohttp.worker
import gunicorn.config
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import unused_port
from prometheus_client import REGISTRY

from texas.ops import telemetry

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
GUNICORN_CONF = DEPLOY / "gunicorn.conf.py"

# Metrics the alerts may use that other exporters provide.
ALLOWED_EXTERNAL = frozenset({"kube_pod_container_status_restarts_total"})

# Series names each metric type adds to its family name in the exposition. `_created` is left
# out on purpose: prometheus-client's multiprocess mode (gunicorn) does not export it.
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
    "info": ("_info",),
}

# The variables texas reads, which a deployment may set.
CONTRACT_VARIABLES = frozenset(
    {
        "BIND_ADDRESS",
        "PROBE_BIND_ADDRESS",
        "IDPORTEN_ENABLED",
        "IDPORTEN_AUDIENCE",
        "IDPORTEN_WELL_KNOWN_URL",
        "IDPORTEN_ISSUER",
        "IDPORTEN_JWKS_URI",
        "MASKINPORTEN_ENABLED",
        "MASKINPORTEN_WELL_KNOWN_URL",
        "MASKINPORTEN_ISSUER",
        "MASKINPORTEN_JWKS_URI",
        "AZURE_ENABLED",
        "AZURE_APP_CLIENT_ID",
        "AZURE_APP_WELL_KNOWN_URL",
        "AZURE_OPENID_CONFIG_ISSUER",
        "AZURE_OPENID_CONFIG_JWKS_URI",
        "TOKEN_X_ENABLED",
        "TOKEN_X_CLIENT_ID",
        "TOKEN_X_WELL_KNOWN_URL",
        "TOKEN_X_ISSUER",
        "TOKEN_X_JWKS_URI",
        "TEXAS_SECRETS_DIR",
        "TEXAS_LEEWAY_SECONDS",
        "TEXAS_JWKS_REFRESH_SECONDS",
        "TEXAS_JWKS_MIN_REFRESH_SECONDS",
        "TEXAS_JWKS_FETCH_TIMEOUT_SECONDS",
        "TEXAS_JWKS_MAX_STALE_SECONDS",
        # Read by deploy/gunicorn.conf.py and the process environment.
        "WEB_CONCURRENCY",
        "LOG_LEVEL",
        "PROMETHEUS_MULTIPROC_DIR",
        "TMPDIR",
    }
)


# --- metric names: what texas exports, what PromQL uses ---------------------------------------


def exported_names() -> frozenset[str]:
    """Every series name texas exposes at /metrics, from the live registry."""
    names = {telemetry.STALENESS_NAME}
    for family in REGISTRY.collect():
        if family.name.startswith("texas_"):
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return frozenset(names)


TEXAS_NAME = re.compile(r"\btexas_[a-z0-9_]+")
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?")
_NOT_METRICS = (
    re.compile(r'"(?:[^"\\]|\\.)*"'),  # string literals: label values and regexes
    re.compile(r"\{[^}]*\}"),  # label matchers
    re.compile(r"\[[^\]]*\]"),  # range and subquery windows
    re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"),  # labels
)
_IDENTIFIER = re.compile(r"(?<![\w.:])[a-zA-Z_:][\w:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"}
    | {"by", "without", "on", "ignoring", "group_left", "group_right"}
)
_LABEL_VALUES = re.compile(r"^\s*label_values\((?P<expr>.*),\s*\w+\s*\)\s*$", re.DOTALL)


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not keywords, functions,
    label names, label values or durations."""
    expr = _GRAFANA_VARIABLE.sub("", expr)
    for pattern in _NOT_METRICS:
        expr = pattern.sub(" ", expr)
    names = set()
    for match in _IDENTIFIER.finditer(expr):
        if match.group() in _KEYWORDS or expr[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function / aggregation call
        names.add(match.group())
    return names


def unknown_metrics(exprs: collections.abc.Iterable[str], exported: frozenset[str]) -> set[str]:
    """Names used in `exprs` that neither texas nor an allowed external exporter provides."""
    used: set[str] = set()
    for expr in exprs:
        used |= set(TEXAS_NAME.findall(expr)) | metric_names(expr)
    return {name for name in used if name not in exported and name not in ALLOWED_EXTERNAL}


def _all_panels(panels: list[dict[str, Any]]) -> collections.abc.Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _all_panels(panel.get("panels", []))  # collapsed rows nest their panels


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of a Grafana dashboard: panel targets and variable queries."""
    exprs = [
        target["expr"]
        for panel in _all_panels(dashboard.get("panels", []))
        for target in panel.get("targets", [])
    ]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = _LABEL_VALUES.match(query)
        exprs.append(match.group("expr") if match else query)
    return exprs


def rule_exprs(rule_file: dict[str, Any]) -> list[str]:
    return [rule["expr"] for group in rule_file["spec"]["groups"] for rule in group["rules"]]


def _load_yaml(name: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc is not None]


def _dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return dashboard


def _prometheus_rule() -> dict[str, Any]:
    (rule_file,) = _load_yaml("prometheusrule.yaml")
    assert isinstance(rule_file, dict)
    return rule_file


def test_exported_names_come_from_the_registry() -> None:
    names = exported_names()
    assert {
        "texas_introspections_total",
        "texas_http_request_duration_seconds_bucket",
        "texas_http_requests_in_flight",
        "texas_jwks_staleness_seconds",
    } <= names
    assert "texas_introspections" not in names  # a counter is only exposed with _total


def test_the_derived_staleness_gauge_is_in_the_exposition() -> None:
    assert f"# TYPE {telemetry.STALENESS_NAME} gauge" in telemetry.render().decode()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("texas_jwks_keys", {"texas_jwks_keys"}),
        (
            'sum by (provider, result) (rate(texas_jwks_fetches_total{result=~"200|304"}[5m]))',
            {"texas_jwks_fetches_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (le) (rate(texas_http_request_duration_seconds_bucket"
            '{namespace=~"$namespace"}[$__rate_interval])))',
            {"texas_http_request_duration_seconds_bucket"},
        ),
        (
            "a_total > 0 unless on (pod) b_total offset 5m > 1e3",
            {"a_total", "b_total"},
        ),
        ("max(x) by (pod) / ignoring(code) group_left sum(y)", {"x", "y"}),
    ],
    ids=["bare", "aggregation-and-matchers", "grafana-variables", "keywords-numbers", "by-after"],
)
def test_metric_names_are_extracted_from_promql(expr: str, expected: set[str]) -> None:
    assert metric_names(expr) == expected


def test_a_dashboard_with_a_name_texas_does_not_export_fails_the_check() -> None:
    dashboard = {
        "panels": [
            {"type": "row", "panels": []},
            {"targets": [{"expr": "sum(rate(texas_introspections_total[5m]))"}]},
            {"targets": [{"expr": "sum(rate(texas_introspection_total[5m]))"}]},  # no s
        ],
        "templating": {"list": [{"type": "query", "query": "label_values(texas_keys, provider)"}]},
    }
    assert unknown_metrics(dashboard_queries(dashboard), exported_names()) == {
        "texas_introspection_total",
        "texas_keys",
    }


def test_an_alert_on_an_unlisted_external_metric_fails_the_check() -> None:
    exprs = ["increase(kube_pod_container_restarts[30m]) > 2"]
    assert unknown_metrics(exprs, exported_names()) == {"kube_pod_container_restarts"}


# --- the dashboard ------------------------------------------------------------------------------


def test_dashboard_uses_only_exported_metrics() -> None:
    assert unknown_metrics(dashboard_queries(_dashboard()), exported_names()) == set()


def test_dashboard_shows_every_texas_metric() -> None:
    used = set().union(*(metric_names(expr) for expr in dashboard_queries(_dashboard())))
    families = {f.name: f.type for f in REGISTRY.collect() if f.name.startswith("texas_")}
    families[telemetry.STALENESS_NAME] = "gauge"
    missing = {
        name
        for name, kind in families.items()
        if not used & {name + suffix for suffix in _SUFFIXES.get(kind, ("",))}
    }
    assert missing == set()


def test_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41
    panels = list(_all_panels(dashboard["panels"]))
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
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
            assert target["datasource"]["type"] == "prometheus"


# --- the PrometheusRule -------------------------------------------------------------------------


def test_prometheus_rule_uses_only_exported_metrics() -> None:
    assert unknown_metrics(rule_exprs(_prometheus_rule()), exported_names()) == set()


def test_prometheus_rule_alerts_on_what_the_issue_asks() -> None:
    rule_file = _prometheus_rule()
    assert rule_file["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule_file["kind"] == "PrometheusRule"
    used = set().union(*(metric_names(expr) for expr in rule_exprs(rule_file)))
    assert {
        "texas_jwks_fetches_total",  # refresh failing
        "texas_jwks_staleness_seconds",  # stale
        "texas_introspections_total",  # inactive share
        "kube_pod_container_status_restarts_total",  # restarts
        "texas_http_responses_total",  # 5xx
        "texas_internal_errors_total",  # faults inside texas, answered 200 on introspection
    } <= used


def test_every_alert_is_labelled_and_explained() -> None:
    rules = [rule for group in _prometheus_rule()["spec"]["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]


# --- Kubernetes and NAIS manifests --------------------------------------------------------------


def _containers(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    every = pod_spec.get("initContainers", []) + pod_spec["containers"]
    return {container["name"]: container for container in every}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_kubernetes_example_parses_into_secret_deployment_and_service() -> None:
    kinds = [doc["kind"] for doc in _load_yaml("kubernetes.yaml")]
    assert sorted(kinds) == ["Deployment", "Secret", "Service"]


def test_kubernetes_texas_sidecar_is_locked_down_and_probed() -> None:
    docs = {doc["kind"]: doc for doc in _load_yaml("kubernetes.yaml")}
    pod = docs["Deployment"]["spec"]["template"]
    containers = _containers(pod["spec"])
    texas = containers["texas"]
    env = _env(texas)

    security = texas["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["runAsNonRoot"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert texas["resources"]["requests"] and texas["resources"]["limits"]["memory"]

    # Probes reach the probe address, which is not loopback (the kubelet comes from outside).
    probe_port = _port(env["PROBE_BIND_ADDRESS"])
    assert not env["PROBE_BIND_ADDRESS"].startswith("127.")
    ports = {port["name"]: port["containerPort"] for port in texas["ports"]}
    assert texas["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert texas["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert ports[texas[probe]["httpGet"]["port"]] == probe_port
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == probe_port
    assert annotations["prometheus.io/path"] == "/metrics"

    # /tmp is the only writable place, and it is an emptyDir.
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    (tmp,) = [mount for mount in texas["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert "emptyDir" in volumes[tmp["name"]]

    # The NAIS variables come from the Secret, and are all variables texas reads.
    (secret_ref,) = [source["secretRef"]["name"] for source in texas["envFrom"]]
    secret = docs["Secret"]
    assert secret["metadata"]["name"] == secret_ref
    keys = set(secret["stringData"])
    assert {"IDPORTEN_ENABLED", "IDPORTEN_WELL_KNOWN_URL", "IDPORTEN_AUDIENCE"} <= keys
    assert keys | set(env) <= CONTRACT_VARIABLES

    # The app reaches texas's API on loopback.
    app = containers["myapp"]
    endpoint = _env(app)["NAIS_TOKEN_INTROSPECTION_ENDPOINT"]
    assert endpoint == f"http://{env['BIND_ADDRESS']}/api/v1/introspect"
    assert env["BIND_ADDRESS"].startswith("127.0.0.1:")


def test_nais_manifest_enables_every_identity_provider() -> None:
    (app,) = _load_yaml("nais.yaml")
    assert app["apiVersion"] == "nais.io/v1alpha1"
    assert app["kind"] == "Application"
    assert app["metadata"]["labels"]["team"]
    spec = app["spec"]
    assert spec["idporten"]["enabled"] is True
    assert spec["maskinporten"]["enabled"] is True
    assert spec["azure"]["application"]["enabled"] is True
    assert spec["tokenx"]["enabled"] is True


# --- Dockerfile (docker cannot run here; checked by reading) ------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_runs_gunicorn_as_non_root_with_a_health_check() -> None:
    instructions = _dockerfile()
    args = dict(rest.partition("=")[::2] for keyword, rest in instructions if keyword == "ARG")
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    final = _final_stage(instructions)
    (user,) = [rest for keyword, rest in final if keyword == "USER"]
    uid = user.partition(":")[0]
    assert uid.isdigit() and int(uid) > 0  # numeric, so runAsNonRoot can verify it
    (cmd,) = [rest for keyword, rest in final if keyword == "CMD"]
    assert json.loads(cmd) == [
        "gunicorn",
        "-c",
        "deploy/gunicorn.conf.py",
        "texas.app:create_app_from_env",
    ]
    (healthcheck,) = [rest for keyword, rest in final if keyword == "HEALTHCHECK"]
    assert json.loads(healthcheck[healthcheck.index("CMD") + 3 :]) == [
        "python",
        "deploy/healthcheck.py",
    ]
    assert ("EXPOSE", "3000") in final


def test_dockerfile_copies_only_files_that_the_build_context_lets_through() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # `pip install /src` needs the package, its metadata and the readme it names.
    assert {"pyproject.toml", "texas", pyproject["project"]["readme"]} <= allowed
    for keyword, rest in _dockerfile():
        if keyword == "COPY" and not rest.startswith("--from"):
            *sources, _ = rest.split()
            for source in sources:
                if source != ".":
                    assert source in allowed and (ROOT / source).is_file(), source


# --- the health check script --------------------------------------------------------------------


def _healthcheck() -> dict[str, Any]:
    return runpy.run_path(str(DEPLOY / "healthcheck.py"))


@pytest.mark.parametrize(
    ("environ", "url"),
    [
        ({}, "http://127.0.0.1:3000/healthz"),
        ({"BIND_ADDRESS": "0.0.0.0:8000"}, "http://127.0.0.1:8000/healthz"),
        ({"BIND_ADDRESS": "[::]:8000"}, "http://[::1]:8000/healthz"),
        (
            {"BIND_ADDRESS": "127.0.0.1:3000", "PROBE_BIND_ADDRESS": "0.0.0.0:3001"},
            "http://127.0.0.1:3001/healthz",
        ),
    ],
    ids=["default", "wildcard", "ipv6-wildcard", "probe-address-wins"],
)
def test_healthcheck_asks_texas_own_address(environ: dict[str, str], url: str) -> None:
    assert _healthcheck()["probe_url"](environ) == url


@pytest.mark.parametrize(("status", "exit_code"), [(200, 0), (503, 1)], ids=["ok", "failing"])
async def test_healthcheck_exit_code_follows_healthz(
    aiohttp_server: Any, status: int, exit_code: int
) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": status}, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = await aiohttp_server(app, host="127.0.0.1")
    main = _healthcheck()["main"]
    # The check blocks (urllib), so it runs off the loop that serves the request.
    assert await asyncio.to_thread(main, {"BIND_ADDRESS": f"127.0.0.1:{server.port}"}) == exit_code


def test_healthcheck_fails_when_nothing_listens() -> None:
    assert _healthcheck()["main"]({"BIND_ADDRESS": f"127.0.0.1:{unused_port()}"}) == 1


# --- gunicorn configuration ---------------------------------------------------------------------


def _load_gunicorn_conf(monkeypatch: pytest.MonkeyPatch, environ: dict[str, str]) -> dict[str, Any]:
    for name in ("BIND_ADDRESS", "WEB_CONCURRENCY", "LOG_LEVEL", "PROMETHEUS_MULTIPROC_DIR"):
        # setenv first, so that monkeypatch also undoes a variable the config file sets itself
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(GUNICORN_CONF))


def _settings(namespace: dict[str, Any]) -> dict[str, Any]:
    """The module's public names: what gunicorn reads as settings."""
    return {
        name: value
        for name, value in namespace.items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


@pytest.fixture
def metrics_dir(tmp_path: Path) -> Path:
    path = tmp_path / "metrics"
    path.mkdir()
    return path


def test_gunicorn_conf_reads_the_environment(monkeypatch: pytest.MonkeyPatch, metrics_dir: Path) -> None:
    conf = _load_gunicorn_conf(
        monkeypatch,
        {
            "BIND_ADDRESS": "0.0.0.0:3999",
            "WEB_CONCURRENCY": "3",
            "LOG_LEVEL": "WARNING",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
    )
    assert conf["bind"] == ["0.0.0.0:3999"]
    assert conf["workers"] == 3
    assert conf["loglevel"] == "warning"
    assert conf["accesslog"] is None
    assert conf["preload_app"] is False
    assert callable(conf["child_exit"])
    assert os.environ["PROMETHEUS_MULTIPROC_DIR"] == str(metrics_dir)


def test_gunicorn_conf_defaults(monkeypatch: pytest.MonkeyPatch, metrics_dir: Path) -> None:
    conf = _load_gunicorn_conf(monkeypatch, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    assert conf["bind"] == ["127.0.0.1:3000"]
    assert conf["workers"] == 2
    assert conf["loglevel"] == "info"


def test_gunicorn_conf_picks_the_uvloop_worker_when_uvloop_imports(
    monkeypatch: pytest.MonkeyPatch, metrics_dir: Path
) -> None:
    conf = _load_gunicorn_conf(monkeypatch, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    try:
        import uvloop  # noqa: F401
    except ImportError:
        assert conf["worker_class"] == "aiohttp.GunicornWebWorker"
    else:
        assert conf["worker_class"] == "aiohttp.GunicornUVLoopWebWorker"


def test_gunicorn_accepts_every_setting(monkeypatch: pytest.MonkeyPatch, metrics_dir: Path) -> None:
    conf = _load_gunicorn_conf(monkeypatch, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    cfg = gunicorn.config.Config()
    settings = _settings(conf)
    assert set(settings) <= set(cfg.settings), "a name gunicorn would silently ignore"
    for name, value in settings.items():
        cfg.set(name, value)  # gunicorn's own validators, hook arity included
    assert cfg.worker_class in {
        aiohttp.worker.GunicornWebWorker,
        aiohttp.worker.GunicornUVLoopWebWorker,
    }
    assert cfg.workers == 2
    assert cfg.address and cfg.keepalive > 2 and cfg.graceful_timeout < 30


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"WEB_CONCURRENCY": "two"}, "WEB_CONCURRENCY"),
        ({"BIND_ADDRESS": "3000"}, "BIND_ADDRESS"),
        ({"BIND_ADDRESS": "127.0.0.1:http"}, "BIND_ADDRESS"),
    ],
    ids=["zero-workers", "words", "port-only", "named-port"],
)
def test_gunicorn_conf_stops_on_a_bad_value_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, metrics_dir: Path, environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(SystemExit, match=variable):
        _load_gunicorn_conf(monkeypatch, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **environ})


def test_gunicorn_conf_makes_a_metrics_dir_under_tmpdir_when_none_is_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # what TMPDIR would give
    conf = _load_gunicorn_conf(monkeypatch, {})
    made = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])  # set for the workers to inherit
    assert made.parent == tmp_path and made.is_dir()
    assert list(made.iterdir()) == []

    conf["on_exit"](None)
    assert not made.exists()


VALID_CONFIG = {
    "MASKINPORTEN_ENABLED": "true",
    "MASKINPORTEN_WELL_KNOWN_URL": "https://maskinporten.example/.well-known/oauth-authorization-server",
}


def test_on_starting_stops_with_one_line_on_a_bad_configuration(
    monkeypatch: pytest.MonkeyPatch, metrics_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = _load_gunicorn_conf(
        monkeypatch, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "IDPORTEN_ENABLED": "true"}
    )
    with pytest.raises(SystemExit) as info:
        conf["on_starting"](None)
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "IDPORTEN_ENABLED" in line


def test_on_starting_empties_the_metrics_dir(monkeypatch: pytest.MonkeyPatch, metrics_dir: Path) -> None:
    conf = _load_gunicorn_conf(monkeypatch, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), **VALID_CONFIG})
    (metrics_dir / "counter_4242.db").write_bytes(b"stale")
    (metrics_dir / "gauge_livesum_4242.db").write_bytes(b"stale")
    (metrics_dir / "notes.txt").write_text("not ours")
    conf["on_starting"](None)
    assert sorted(path.name for path in metrics_dir.iterdir()) == ["notes.txt"]

    conf["on_exit"](None)  # a directory given by the operator stays
    assert metrics_dir.is_dir()


def test_child_exit_drops_the_dead_workers_live_gauges_only(
    monkeypatch: pytest.MonkeyPatch, metrics_dir: Path
) -> None:
    conf = _load_gunicorn_conf(monkeypatch, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    for name in (
        "counter_4242.db",
        "histogram_4242.db",
        "gauge_livesum_4242.db",
        "gauge_livemin_4242.db",
        "gauge_livesum_4343.db",
    ):
        (metrics_dir / name).write_bytes(b"")
    # gunicorn passes its Worker object; only `pid` is read.
    conf["child_exit"](None, types.SimpleNamespace(pid=4242))
    assert sorted(path.name for path in metrics_dir.iterdir()) == [
        "counter_4242.db",  # a dead worker's counts still belong in the totals
        "gauge_livesum_4343.db",
        "histogram_4242.db",
    ]


def test_gunicorn_log_lines_are_json(monkeypatch: pytest.MonkeyPatch, metrics_dir: Path) -> None:
    conf = _load_gunicorn_conf(monkeypatch, {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
    formatter = conf["logconfig_dict"]["formatters"]["json"]["()"]()
    record = logging.LogRecord("gunicorn.error", logging.INFO, __file__, 1, "Listening at: %s", ("x",), None)
    line = formatter.format(record)
    assert "\n" not in line
    assert json.loads(line) | {"time": None} == {
        "time": None,
        "level": "info",
        "logger": "gunicorn.error",
        "message": "Listening at: x",
    }


def test_loading_the_gunicorn_conf_leaves_no_environment_behind(tmp_path: Path) -> None:
    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    with pytest.MonkeyPatch.context() as inner:
        inner.setattr(tempfile, "tempdir", str(tmp_path))
        _load_gunicorn_conf(inner, {})
        assert os.environ["PROMETHEUS_MULTIPROC_DIR"]
    assert os.environ.get("PROMETHEUS_MULTIPROC_DIR") == before

"""deploy/: the manifests pass the Kubernetes schemas and say what texas needs, the gunicorn
config sets what it should, the health check works against a real server.

The alerts are checked by promtool (test_alerts.py), the dashboard by a real Prometheus
(test_dashboard.py)."""

import asyncio
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

try:
    import kubernetes_validate
except ImportError:  # the test extra's; CI installs it
    kubernetes_validate = None

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
GUNICORN_CONF = DEPLOY / "gunicorn.conf.py"

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


def _load_yaml(name: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc is not None]


# --- Kubernetes and NAIS manifests --------------------------------------------------------------


def _containers(pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    every = pod_spec.get("initContainers", []) + pod_spec["containers"]
    return {container["name"]: container for container in every}


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", []) if "value" in item}


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


# The oldest Kubernetes the example runs on (texas as a native sidecar: an init container with
# restartPolicy, 1.29) and a recent one; both ship with kubernetes-validate, which works offline.
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")

with_kubernetes_validate = pytest.mark.skipif(
    kubernetes_validate is None and not os.environ.get("CI"),
    reason="kubernetes-validate is not installed (pip install -e '.[test]')",
)


def _validator() -> types.ModuleType:
    assert kubernetes_validate is not None, "kubernetes-validate is not installed, and CI needs it"
    return kubernetes_validate


def _validate(document: dict[str, Any], version: str) -> None:
    """Validate against the Kubernetes JSON schemas; strict: an unknown field is an error."""
    _validator().validate(document, version, strict=True)


@with_kubernetes_validate
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_kubernetes_example_passes_the_kubernetes_schemas(version: str) -> None:
    for document in _load_yaml("kubernetes.yaml"):
        _validate(document, version)


@with_kubernetes_validate
def test_the_kubernetes_schemas_catch_a_misspelt_field_and_a_wrong_type() -> None:
    docs = {doc["kind"]: doc for doc in _load_yaml("kubernetes.yaml")}
    deployment = docs["Deployment"]
    texas = _containers(deployment["spec"]["template"]["spec"])["texas"]
    texas["securityContext"]["readOnlyRootFileSystem"] = texas["securityContext"].pop(
        "readOnlyRootFilesystem"
    )
    with pytest.raises(_validator().ValidationError, match="readOnlyRootFileSystem"):
        _validate(deployment, KUBERNETES_VERSIONS[0])
    service = docs["Service"]
    service["spec"]["ports"][0]["port"] = "eighty"
    with pytest.raises(_validator().ValidationError, match="eighty"):
        _validate(service, KUBERNETES_VERSIONS[0])


@with_kubernetes_validate
@pytest.mark.parametrize("name", ["nais.yaml", "prometheusrule.yaml"])
def test_custom_resources_are_outside_the_kubernetes_schemas(name: str) -> None:
    """NAIS's Application and prometheus-operator's PrometheusRule are custom resources, which
    the Kubernetes schemas do not describe (the rule groups are checked by promtool in
    test_alerts.py). Should the validator learn them, validate them above instead."""
    (document,) = _load_yaml(name)
    with pytest.raises(_validator().SchemaNotFoundError):
        _validate(document, KUBERNETES_VERSIONS[-1])


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

"""gunicorn settings for texas under several processes:

    gunicorn -c deploy/gunicorn.conf.py texas.app:create_app_from_env

Each worker is a whole texas (its own key sets, refresh tasks and token cache); the master only
forks and reaps workers. Metrics from all workers are summed through one prometheus-client
multiprocess directory, which is why it has to exist, empty, before the first worker forks.

Environment:
  BIND_ADDRESS              host:port of the API (default 127.0.0.1:3000)
  WEB_CONCURRENCY           number of workers (default 2)
  LOG_LEVEL                 level of gunicorn's own log lines (default info)
  PROMETHEUS_MULTIPROC_DIR  metrics directory (default: a fresh one under TMPDIR, removed at exit)
Anything else through GUNICORN_CMD_ARGS, e.g. GUNICORN_CMD_ARGS="--graceful-timeout 40".
"""

import collections.abc
import datetime
import json
import logging
import os
import shutil
import sys
import tempfile
import typing

_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_OWN_DIR_PREFIX = "texas-metrics-"


def _bind(environ: collections.abc.Mapping[str, str]) -> list[str]:
    address = environ.get("BIND_ADDRESS") or "127.0.0.1:3000"
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise SystemExit(f"BIND_ADDRESS must be host:port, got {address!r}")
    return [address]


def _workers(environ: collections.abc.Mapping[str, str]) -> int:
    raw = environ.get("WEB_CONCURRENCY") or "2"
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"WEB_CONCURRENCY must be a positive integer, got {raw!r}")
    return int(raw)


def _worker_class() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "aiohttp.GunicornWebWorker"
    return "aiohttp.GunicornUVLoopWebWorker"


def _multiproc_dir(environ: collections.abc.MutableMapping[str, str]) -> str:
    """Return the metrics directory, creating one under TMPDIR when none is given.

    Runs when gunicorn reads this file, in the master, before any worker forks and before the
    app (and so prometheus_client, which reads the variable once at import) is loaded. A
    reload (SIGHUP) finds the variable already set and keeps the directory.
    """
    path = environ.get(_MULTIPROC_ENV)
    if not path:
        # tempfile honours TMPDIR; with a read-only root filesystem that is the emptyDir.
        path = tempfile.mkdtemp(prefix=_OWN_DIR_PREFIX)
        environ[_MULTIPROC_ENV] = path
    os.makedirs(path, exist_ok=True)
    return path


class _JsonFormatter(logging.Formatter):
    """gunicorn's own lines (start, worker boot and exit) as one JSON object a line, like
    texas's logs, so a log shipper never meets a plain-text line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, typing.Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


bind = _bind(os.environ)
workers = _workers(os.environ)
worker_class = _worker_class()
proc_name = "texas"

# SIGTERM: stop accepting, let in-flight requests finish, then exit. Below Kubernetes' default
# terminationGracePeriodSeconds (30) so the kill never lands first.
# Above the runner's shutdown timeout (texas/runner.py, 20 s) so the worker finishes first, and
# below Kubernetes' default 30 s grace period.
graceful_timeout = 25
timeout = 30
# aiohttp's own default; gunicorn's 2 s would make the app's connection pool reconnect often.
keepalive = 75

# Workers import the app after the fork, with PROMETHEUS_MULTIPROC_DIR already set; a preloaded
# app would import prometheus_client in the master first and count per process.
preload_app = False
# The control socket would live under $HOME, which is read-only in the container.
control_socket_disable = True

# texas writes its own access log, in JSON, without tokens; gunicorn's would duplicate it.
accesslog = None
errorlog = "-"
loglevel = (os.environ.get("LOG_LEVEL") or "info").lower()
logconfig_dict: dict[str, typing.Any] = {
    "formatters": {"json": {"()": _JsonFormatter}},
    "handlers": {
        "json_stdout": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        },
    },
    "loggers": {
        # No level here: gunicorn sets it from `loglevel`.
        "gunicorn.error": {"handlers": ["json_stdout"], "propagate": False},
        "gunicorn.access": {"handlers": [], "propagate": False},
    },
    # Leave the root logger bare: texas configures its own handlers in each worker.
    "root": {"handlers": []},
}

_metrics_dir = _multiproc_dir(os.environ)


def on_starting(server: typing.Any) -> None:
    """Check the configuration once, in the master, so a bad one stops start-up with one line
    naming the variable (exit 2) instead of a traceback per worker; then empty the metrics
    directory: files from an earlier run would be summed into this one."""
    from texas.config import Config  # does not import prometheus_client
    from texas.errors import ConfigError

    try:
        Config.from_env(os.environ)
    except ConfigError as e:
        print(f"texas: configuration error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    path = os.environ[_MULTIPROC_ENV]
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def child_exit(server: typing.Any, worker: typing.Any) -> None:
    """Drop a dead worker's live gauges (in-flight, keys held, last success) from the sums."""
    # Imported here, not at the top: the master must not load prometheus_client before the
    # metrics directory is in the environment (and not texas.ops.telemetry, whose module-level
    # gauges would give the master files of its own).
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: typing.Any) -> None:
    """Remove the metrics directory if this file created it."""
    path = os.environ.get(_MULTIPROC_ENV, "")
    if os.path.basename(path).startswith(_OWN_DIR_PREFIX):
        shutil.rmtree(path, ignore_errors=True)

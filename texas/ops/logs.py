"""Logging: one JSON object a line on stdout (or plain text for local use), with request ids.

Every line has `time` (RFC 3339, UTC), `level`, `logger` and `message`; a line logged while a
request is being answered also has its `request_id`. The access log is one such line per
request, written by `AccessLogger` (which `runner.DrainingRunner` installs, under `texas serve`
and gunicorn alike) with `method`, `path`, `status`, `duration_ms` and `request_id`.

What texas logs never includes a token, a `pid` or any claim value: messages carry provider
names, reason codes, URLs from configuration and counts, nothing from a request body. The
request's own strings are kept out on purpose: the access log names a path only when it is
one of the service's routes (never a query string), an incoming X-Request-Id is accepted only
when it looks like an id, and a traceback keeps its frames and exception types but drops the
messages of exceptions that texas did not write (a library's message may quote its input).
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from typing import Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from texas.errors import TexasError

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
REQUEST_ID_HEADER = "X-Request-Id"

ACCESS_LOGGER = logging.getLogger("texas.access")
# Probes and scrapes arrive every few seconds from the kubelet and Prometheus: DEBUG, not INFO.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"})
# Ids from proxies and meshes (UUIDs, W3C trace ids, Envoy's) fit; a JWT never does.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


def _new_id_sequence() -> None:
    """Request ids unique per process without a syscall each (uuid4 reads os.urandom): a random
    prefix, then a counter. Drawn again in a forked child, so gunicorn's workers never share
    a prefix even if the master imported this module."""
    global _id_prefix, _id_numbers
    _id_prefix = uuid.uuid4().hex[:12]
    _id_numbers = itertools.count(1)


_id_prefix: str
_id_numbers: Iterator[int]
_new_id_sequence()
os.register_at_fork(after_in_child=_new_id_sequence)


def accept_request_id(header: str | None) -> str:
    """The caller's X-Request-Id when it looks like an id, else a fresh one: the id is logged
    on every line, so it must not be a way to put request content into the logs."""
    if header and _REQUEST_ID.fullmatch(header) and not header.startswith("eyJ"):
        return header
    return f"{_id_prefix}-{next(_id_numbers)}"


def redacted_traceback(exc: BaseException) -> str:
    """The traceback with frames and exception types, and messages only from TexasError
    (texas's own sentences); for chained exceptions, the whole chain, outermost last."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = type(current)
        name = f"{kind.__module__}.{kind.__qualname__}"
        if isinstance(current, TexasError):
            name = f"{name}: {current}"
        frames = "".join(traceback.format_tb(current.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{name}")
        context = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or context
    return "\n\nwhich caused:\n".join(reversed(parts))


def _exception(exc_info: Any) -> str | None:
    if isinstance(exc_info, tuple) and isinstance(exc_info[1], BaseException):
        return redacted_traceback(exc_info[1])
    return None


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, request_id, and any `extra`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        exception = _exception(record.exc_info)
        if exception is not None:
            entry["exception"] = exception
        if record.stack_info:
            entry["stack"] = record.stack_info
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a terminal: `time level logger: message [request id]`, tracebacks redacted alike."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {message}"
        rid = request_id.get() or getattr(record, "request_id", None)
        if rid:
            line = f"{line} [{rid}]"
        exception = _exception(record.exc_info)
        return f"{line}\n{exception}" if exception else line


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Send every log line (warnings included) to stdout, as JSON or as text."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # texas writes the access log itself (AccessLogger); aiohttp's chatter stays at WARNING
    logging.getLogger("aiohttp").setLevel(max(logging.getLevelName(level), logging.WARNING))
    ACCESS_LOGGER.setLevel(level)
    logging.captureWarnings(True)


NOT_FOUND_ROUTE = "not_found"  # the catch-all route's name (app.py); its paths are anybody's


def logged_path(request: web.BaseRequest) -> str:
    """The route a request matched, as registered; anything else is "other", so neither a
    query string nor a made-up path (which could carry a token) reaches the logs."""
    match = getattr(request, "match_info", None)
    if match is None:  # refused before routing (a malformed request line, say)
        return "other"
    resource = match.route.resource
    if resource is not None and resource.name != NOT_FOUND_ROUTE:
        return str(resource.canonical)
    if isinstance(match.http_exception, web.HTTPMethodNotAllowed):
        return request.path  # the path is a route; only the method was wrong
    return "other"


def logged_method(method: str) -> str:
    """The method if it is a standard one, else "other" (aiohttp accepts any token)."""
    return method if method in _METHODS else "other"


class AccessLogger(AbstractAccessLogger):
    """One line per request, in the same form as every other line: method, path, status,
    duration and request id; never a query string, a header value or the body."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, elapsed: float) -> None:
        path = logged_path(request)
        level = logging.DEBUG if path in QUIET_PATHS else logging.INFO
        if not self.logger.isEnabledFor(level):
            return
        method = logged_method(request.method)
        self.logger.log(
            level,
            "%s %s %d",
            method,
            path,
            response.status,
            extra={
                "method": method,
                "path": path,
                "status": response.status,
                "duration_ms": round(elapsed * 1000, 3),
                "request_id": response.headers.get(REQUEST_ID_HEADER),
            },
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

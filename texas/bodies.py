"""Request bodies, read alike by every endpoint: the Content-Encoding undone within the size
limit, then a JSON object or a form whose fields the endpoint names.

A field the endpoint reads may appear once only: parsers disagree on which of two copies wins
(orjson, like most, keeps the last silently), so a repeat is refused rather than guessed at.
Only the top level counts; a member the endpoint does not read may hold any object. Every
failure is a `BadRequest` with one sentence, never a fault.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Mapping
from urllib.parse import parse_qsl

from texas.errors import BadRequest
from texas.introspection.fastjson import read_unrepeated

MAX_BODY_BYTES = 1024 * 1024
_FAST_DEPTH = 32  # bodies nested deeper are read by the exact parser alone
_MAX_FORM_FIELDS = 32


TOO_LARGE = f"The request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB."


class BodyTooLarge(Exception):
    """Over MAX_BODY_BYTES once decoded: each endpoint answers it in its own shape."""


def decode(encoding: str, body: bytes) -> bytes:
    """The body without its Content-Encoding, never more than MAX_BODY_BYTES (a small gzip
    body can inflate to gigabytes). Raises BodyTooLarge, or BadRequest for a body that does
    not decode."""
    if not encoding:  # the usual case, first
        return body
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        inflater = zlib.decompressobj(wbits=31)
    elif encoding == "deflate":
        inflater = zlib.decompressobj(wbits=15)
    else:
        raise BadRequest("The request body's Content-Encoding is not one of gzip, deflate or identity.")
    try:
        decoded = inflater.decompress(body, MAX_BODY_BYTES + 1)
        if len(decoded) > MAX_BODY_BYTES or inflater.unconsumed_tail:
            raise BodyTooLarge()
        if not inflater.eof:
            raise zlib.error("truncated")
        if inflater.unused_data:  # junk or a second gzip member: not one stream
            raise zlib.error("trailing data")
    except zlib.error:
        raise BadRequest("The request body does not decode as its Content-Encoding says.") from None
    return decoded


def read_fields(content_type: str, body: bytes, fields: tuple[str, ...]) -> Mapping[str, object]:
    """The body's top-level members, from a JSON object or a form; `fields` may not repeat."""
    if content_type == "application/json":
        return _json_object(body, fields)
    if content_type == "application/x-www-form-urlencoded":
        return _form(body, fields)
    raise BadRequest("The request must be application/json or application/x-www-form-urlencoded.")


class _Repeating(dict[str, object]):
    """A JSON object that gave some member names more than once."""

    def __init__(self, pairs: list[tuple[str, object]]) -> None:
        super().__init__(pairs)
        counts = Counter(name for name, _ in pairs)
        self.repeated = frozenset(name for name, count in counts.items() if count > 1)


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    return obj if len(obj) == len(pairs) else _Repeating(pairs)


def _reject_constant(name: str) -> object:
    raise ValueError(name)


# The exact parser: it sees repeated names, and refuses NaN and Infinity as JSON does.
_JSON = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_reject_constant)


def _json_object(body: bytes, fields: tuple[str, ...]) -> dict[str, object]:
    # orjson when it shows that no name repeats (fastjson), else the exact parser:
    # 17,000 instructions instead of 36,000 under callgrind for an ID-porten request
    data = read_unrepeated(body, _FAST_DEPTH)
    if data is not None:
        if not isinstance(data, dict):
            raise BadRequest("The request body must be a JSON object.")
        return data
    try:
        data = _JSON.decode(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadRequest("The request body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object.")
    if isinstance(data, _Repeating):
        for name in fields:
            if name in data.repeated:
                raise BadRequest(f"The request repeats the field {name}.")
    return data


def _form(body: bytes, fields: tuple[str, ...]) -> dict[str, str]:
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("The request body is not a valid form.") from None
    data: dict[str, str] = {}
    for name, value in pairs:
        if name in data and name in fields:
            raise BadRequest(f"The request repeats the field {name}.")
        data[name] = value
    return data

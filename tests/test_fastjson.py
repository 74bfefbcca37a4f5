"""texas.introspection.fastjson against an exact reader: whenever the fast reading answers, the
text repeats no member name and the answer is what the exact reader reads; a text with a
repeated name, at any depth and however it is spelled, is never answered."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from texas.introspection.fastjson import read_unrepeated

MAX_DEPTH = 32


class Repeated(Exception):
    pass


def exact(data: bytes) -> Any:
    """Python's json, refusing a repeated name anywhere (raises Repeated or ValueError)."""

    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len({name for name, _ in pairs}) != len(pairs):
            raise Repeated
        return dict(pairs)

    return json.loads(data.decode("utf-8"), object_pairs_hook=unique)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


# names and strings likely to collide, to hold quotes and colons, or to need escapes
NAMES = st.sampled_from(["iss", "aud", "pid", "token", "a", "", ":", '"', "\\", "é", "\u2028", "x y"])
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    NAMES,
    st.text(max_size=8),
)


def encode_string(text: str, escape: bool) -> str:
    """A JSON string for `text`; with `escape`, every character as a \\u escape."""
    if escape:
        return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in text) + '"'
    return json.dumps(text, ensure_ascii=False)


@st.composite
def documents(draw: st.DrawFn, level: int = 0) -> str:
    """JSON text whose objects may repeat a name (spelled plainly or escaped)."""
    kind = draw(st.sampled_from(["scalar", "object", "array"] if level < 4 else ["scalar"]))
    space = draw(st.sampled_from(["", " ", "\n"]))
    if kind == "scalar":
        value = draw(SCALARS)
        if isinstance(value, str):
            return encode_string(value, draw(st.booleans()))
        return json.dumps(value)
    if kind == "array":
        items = draw(st.lists(documents(level + 1), max_size=4))
        return "[" + ("," + space).join(items) + "]"
    names = draw(st.lists(NAMES, max_size=5))
    if names and draw(st.booleans()):
        names.append(draw(st.sampled_from(names)))  # a repeat, in last position or shuffled in
        names = draw(st.permutations(names))
    members = [
        f"{encode_string(name, draw(st.booleans()))}{space}:{space}{draw(documents(level + 1))}"
        for name in names
    ]
    return "{" + ("," + space).join(members) + "}"


@settings(max_examples=500, deadline=None)
@given(documents())
def test_the_fast_reading_answers_only_what_the_exact_reader_reads(text: str) -> None:
    data = text.encode("utf-8")
    try:
        expected: Any = exact(data)
    except Repeated:
        expected = Repeated
    fast = read_unrepeated(data, MAX_DEPTH)
    if fast is None:
        return  # the caller's exact parser decides
    assert expected is not Repeated, "a repeated name went unnoticed"
    assert fast == expected
    assert depth(expected) <= MAX_DEPTH


def test_the_plain_case_is_answered_fast() -> None:
    data = b'{"iss":"https://issuer.example","aud":["a","b"],"exp":1700000000,"n":{"x":[1,"y"]}}'
    assert read_unrepeated(data, MAX_DEPTH) == json.loads(data)


def test_a_name_repeated_in_a_nested_object_is_not_answered() -> None:
    assert read_unrepeated(b'{"a":{"b":1,"b":2}}', MAX_DEPTH) is None


def test_a_name_repeated_through_an_escape_is_not_answered() -> None:
    assert read_unrepeated(b'{"pid":"1","\\u0070id":"2"}', MAX_DEPTH) is None


def test_nesting_past_the_limit_is_not_answered() -> None:
    assert read_unrepeated(b"[" * 33 + b"]" * 33, MAX_DEPTH) is None
    assert read_unrepeated(b"[" * 32 + b"]" * 32, MAX_DEPTH) is not None

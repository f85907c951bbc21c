"""Client JSON parsed so that no input earns more than a 400 (wirelab.proto.strictjson)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirelab.errors import BadRequest
from wirelab.proto.strictjson import MAX_DEPTH, depth, loads


def test_ordinary_documents_parse() -> None:
    assert loads(b'{"kind": "demo", "steps": 3, "ratio": 0.5, "tags": ["a", {"b": null}]}') == {
        "kind": "demo",
        "steps": 3,
        "ratio": 0.5,
        "tags": ["a", {"b": None}],
    }
    assert loads("[]") == []


def test_depth_counts_brackets_outside_strings_only() -> None:
    assert depth('{"a": "[[[[{{{{", "b": [1, [2]]}') == 3
    assert depth(r'["\"[[[[", []]') == 2
    assert depth("3") == 0


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("[" * 30_000 + "]" * 30_000, "nests deeper"),  # the body of the issue: a RecursionError before
        ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"limit of {MAX_DEPTH} levels"),
        ('{"a": ' * 40 + "1" + "}" * 40, "nests deeper"),
        ("1" * 5000, "more than 100 characters"),  # int() would raise ValueError past 4300 digits
        ("1e999", "out of range"),
        ("-1e999", "out of range"),
        ("[NaN]", "NaN is not a JSON number"),
        ('{"x": Infinity}', "Infinity is not a JSON number"),
        ('{"user": "a", "user": "b"}', "'user' appears twice"),
        ('{"a": {"k": 1, "k": 1}}', "'k' appears twice"),
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
    ],
)
def test_hostile_documents_are_bad_requests(raw: str, says: str) -> None:
    """RFC 8259 §4 leaves duplicate names undefined and §6 has no NaN or Infinity: we refuse them."""
    with pytest.raises(BadRequest, match=says):
        loads(raw)


def test_invalid_utf8_is_a_bad_request() -> None:
    """RFC 8259 §8.1: JSON exchanged between systems is UTF-8."""
    with pytest.raises(BadRequest, match="not valid UTF-8"):
        loads(b'{"user": "\xff\xfe"}')


def test_exactly_the_limit_parses() -> None:
    nested: Any = 1
    for _ in range(MAX_DEPTH):
        nested = [nested]
    assert loads(json.dumps(nested)) == nested


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(json_values)
def test_any_shallow_document_round_trips(value: Any) -> None:
    encoded = json.dumps(value)
    if depth(encoded) <= MAX_DEPTH:
        assert loads(encoded.encode()) == value


@given(st.binary(max_size=200) | st.text(alphabet='[]{}":,0123456789.eE-+ntrufalsNIy\\', max_size=200))
def test_any_input_is_a_value_or_a_bad_request(raw: str | bytes) -> None:
    """Whatever the bytes, the parser answers a value or a BadRequest: nothing else escapes."""
    with contextlib.suppress(BadRequest):
        loads(raw)

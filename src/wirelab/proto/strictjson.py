"""JSON from a client, parsed so that no input can do more than earn a 400.

The standard parser accepts what a hostile client can turn against a server: nesting deep enough to
exhaust the interpreter's recursion (a RecursionError, then a 500), integers of thousands of digits
(a ValueError from int(), or seconds of CPU for the ones just under Python's limit), NaN, Infinity
and 1e999 (numbers JSON does not have), and an object naming one key twice (which value counts
depends on the parser: RFC 8259 §4 leaves it open, so two services can read one body differently).
Each of those is refused here with a BadRequest that names the rule; the depth is checked before
parsing, so nothing deep is ever recursed into.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from wirelab.errors import BadRequest

__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "loads"]

MAX_DEPTH = 32
MAX_NUMBER_CHARS = 100

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(r"[\[\]{}]")


def loads(raw: str | bytes, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in `raw` (UTF-8 when bytes); BadRequest says what is wrong with it."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRequest(f"the JSON is not valid UTF-8 (byte {exc.start}: {exc.reason})") from None
    if depth(raw) > max_depth:
        raise BadRequest(f"the JSON nests deeper than the limit of {max_depth} levels")
    try:
        return json.loads(
            raw,
            object_pairs_hook=_unique_keys,
            parse_int=_int,
            parse_float=_float,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise BadRequest(f"not valid JSON: {exc}") from None


def depth(text: str) -> int:
    """How deep arrays and objects nest in `text`, strings skipped; no parse, no recursion."""
    deepest = level = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        level += 1 if bracket in "[{" else -1
        deepest = max(deepest, level)
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise BadRequest(f"the key {key!r} appears twice in one object")
        document[key] = value
    return document


def _int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise BadRequest(f"a number of more than {MAX_NUMBER_CHARS} characters")
    return int(text)


def _float(text: str) -> float:
    value = float(text) if len(text) <= MAX_NUMBER_CHARS else math.inf
    if not math.isfinite(value):
        raise BadRequest(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is out of range")
    return value


def _constant(name: str) -> Any:
    raise BadRequest(f"{name} is not a JSON number")

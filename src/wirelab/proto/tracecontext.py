"""W3C Trace Context (Level 1): the `traceparent` field a request carries from hop to hop.

Theory of operation: `traceparent` is `VERSION-TRACEID-PARENTID-FLAGS` in lowercase hex
(`00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`). Every hop that takes part in the
trace keeps the trace-id, which names the whole trace, and puts its own span id in the parent-id
position, so the next hop knows whose child it is: that is `child`. A field we cannot read (bad
syntax, an all-zero id, version ff) is treated as absent, and a new trace starts (§4.3); the
`tracestate` that came with it must then be dropped too, since it belongs to the broken trace.

A version above 00 is read the way §4.4 asks: its first four parts as version 00 lays them out,
anything after them ignored if it starts with a dash, and only the sampled bit of its flags kept,
as we cannot know what its other bits mean. We always write version 00, the one we speak.

Ids may be passed in, so tests can name them; otherwise `new_trace_id` and `new_span_id` draw them
from `secrets`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

__all__ = ["SAMPLED", "TraceParent", "child", "new_span_id", "new_trace_id", "parse"]

SAMPLED = 0x01
_V00 = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: str
    """32 lowercase hex digits, not all zero: the whole trace."""
    parent_id: str
    """16 lowercase hex digits, not all zero: the span of the hop that sent the request."""
    flags: int = SAMPLED

    @property
    def sampled(self) -> bool:
        return bool(self.flags & SAMPLED)

    def format(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags:02x}"


def parse(value: str) -> TraceParent | None:
    """The field's content, or None when it is invalid and a new trace must start (§4.3)."""
    value = value.strip(" \t")  # OWS around a field value is not part of it (RFC 9110 §5.5)
    match = _V00.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    if version == "00":
        return TraceParent(trace_id, parent_id, int(flags, 16)) if len(value) == 55 else None
    if len(value) > 55 and value[55] != "-":
        return None
    return TraceParent(trace_id, parent_id, int(flags, 16) & SAMPLED)


def child(traceparent: str | None, span_id: str, *, trace_id: str | None = None) -> str:
    """The `traceparent` for the next hop: our span `span_id` as the parent, in the trace the
    request came with, or, when it came with none we can read, in a new trace (`trace_id`, random
    if not given). A new trace is sampled: the sidecar logs every request."""
    _check_id(span_id, 16, "span_id")
    parent = parse(traceparent) if traceparent is not None else None
    if parent is not None:
        return TraceParent(parent.trace_id, span_id, parent.flags).format()
    trace_id = new_trace_id() if trace_id is None else trace_id
    _check_id(trace_id, 32, "trace_id")
    return TraceParent(trace_id, span_id, SAMPLED).format()


def new_trace_id() -> str:
    return _random_id(16)


def new_span_id() -> str:
    return _random_id(8)


def _random_id(size: int) -> str:
    """Random hex, never all zero (which would be invalid): drawn again in that 2^-64 case."""
    while int(value := secrets.token_hex(size), 16) == 0:
        pass
    return value


def _check_id(value: str, digits: int, name: str) -> None:
    if len(value) != digits or not re.fullmatch(r"[0-9a-f]+", value) or int(value, 16) == 0:
        raise ValueError(f"{name} must be {digits} lowercase hex digits, not all zero: {value!r}")

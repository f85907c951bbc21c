"""W3C Trace Context Level 1 `traceparent`: the examples and the invalid cases of the specification."""

from __future__ import annotations

import pytest

from wirelab.proto.tracecontext import SAMPLED, TraceParent, child, new_span_id, new_trace_id, parse

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
SPAN = "b7ad6b7169203331"


def test_the_specification_example_is_read_and_written_back() -> None:
    """§3.2.2: version, trace-id, parent-id, flags."""
    value = f"00-{TRACE}-{PARENT}-01"
    parsed = parse(value)
    assert parsed == TraceParent(TRACE, PARENT, SAMPLED)
    assert parsed.sampled
    assert parsed.format() == value
    assert parse(f" 00-{TRACE}-{PARENT}-00\t") == TraceParent(TRACE, PARENT, 0)


@pytest.mark.parametrize(
    "value",
    [
        f"00-{'0' * 32}-{PARENT}-01",  # §3.2.2.3: all-zero trace-id
        f"00-{TRACE}-{'0' * 16}-01",  # §3.2.2.4: all-zero parent-id
        f"ff-{TRACE}-{PARENT}-01",  # §3.2.2.1: version ff is invalid
        f"00-{TRACE.upper()}-{PARENT}-01",  # lowercase hex only
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 is exactly 55 characters
        f"00-{TRACE}-{PARENT}-1",
        f"00-{TRACE[:-1]}-{PARENT}-01",
        f"00_{TRACE}_{PARENT}_01",
        f"0x-{TRACE}-{PARENT}-01",
        "",
    ],
)
def test_invalid_fields_are_rejected(value: str) -> None:
    assert parse(value) is None


def test_a_future_version_is_read_by_the_version_00_layout() -> None:
    """§4.4: a higher version is parsed as 00 would be; what follows a dash is ignored; only the
    sampled flag is kept."""
    assert parse(f"cc-{TRACE}-{PARENT}-01") == TraceParent(TRACE, PARENT, SAMPLED)
    assert parse(f"cc-{TRACE}-{PARENT}-03-whatever") == TraceParent(TRACE, PARENT, SAMPLED)
    assert parse(f"cc-{TRACE}-{PARENT}-02") == TraceParent(TRACE, PARENT, 0)
    assert parse(f"cc-{TRACE}-{PARENT}-01x") is None
    assert parse(f"cc-{TRACE}-{PARENT}") is None


def test_a_child_keeps_the_trace_and_names_our_span_as_parent() -> None:
    """§3.2.2.4: the parent-id is the id of the span that made the request, our own."""
    assert child(f"00-{TRACE}-{PARENT}-01", SPAN) == f"00-{TRACE}-{SPAN}-01"
    assert child(f"00-{TRACE}-{PARENT}-00", SPAN) == f"00-{TRACE}-{SPAN}-00"
    assert child(f"cc-{TRACE}-{PARENT}-01-more", SPAN) == f"00-{TRACE}-{SPAN}-01"


def test_a_new_trace_starts_when_none_or_an_invalid_one_came() -> None:
    """§4.3: restart the trace when the field is absent or cannot be parsed."""
    other = "a" * 32
    assert child(None, SPAN, trace_id=other) == f"00-{other}-{SPAN}-01"
    assert child(f"00-{'0' * 32}-{PARENT}-01", SPAN, trace_id=other) == f"00-{other}-{SPAN}-01"
    fresh = parse(child(None, SPAN))
    assert fresh is not None
    assert fresh.trace_id != TRACE
    assert fresh.parent_id == SPAN


def test_random_ids_are_valid_and_differ() -> None:
    ids = {new_trace_id() for _ in range(100)}
    assert len(ids) == 100
    for trace_id in ids:
        assert parse(f"00-{trace_id}-{new_span_id()}-01") is not None


@pytest.mark.parametrize("span", ["0" * 16, "short", SPAN.upper(), SPAN + "0"])
def test_a_bad_span_id_is_our_mistake(span: str) -> None:
    with pytest.raises(ValueError, match="span_id"):
        child(None, span)

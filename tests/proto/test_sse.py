"""SSE framing, checked against WHATWG HTML §9.2.6 "Interpreting an event stream"."""

from __future__ import annotations

import pytest

from wirelab.errors import ProtocolError
from wirelab.proto.sse import (
    Comment,
    Retry,
    ServerSentEvent,
    SSEDecoder,
    encode_comment,
    encode_event,
    encode_retry,
)


def test_encoded_event_decodes_to_itself() -> None:
    """§9.2.6: id, event and data fields; a blank line dispatches."""
    wire = encode_event('{"a": 1}', event="progress", id="7")
    assert wire == b'id: 7\nevent: progress\ndata: {"a": 1}\n\n'
    assert SSEDecoder().receive_data(wire) == [ServerSentEvent('{"a": 1}', "progress", "7")]


def test_multiline_data_becomes_several_data_lines() -> None:
    """§9.2.6: each data line is appended with a newline between them."""
    wire = encode_event("one\ntwo\r\nthree")
    assert wire == b"data: one\ndata: two\ndata: three\n\n"
    assert SSEDecoder().receive_data(wire) == [ServerSentEvent("one\ntwo\nthree")]


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_line_ending_is_accepted(newline: bytes) -> None:
    """§9.2.5: lines end with CRLF, LF or CR."""
    wire = newline.join([b"id: 3", b"event: done", b"data: x", b"", b""])
    assert SSEDecoder().receive_data(wire) == [ServerSentEvent("x", "done", "3")]


def test_bytes_split_anywhere_decode_the_same() -> None:
    """A chunk may end anywhere, even between CR and LF; the result must not change."""
    wire = (
        b"\xef\xbb\xbfretry: 1500\r\n\r\n: beat\r\n\r\n"
        b"id: 1\r\nevent: progress\r\ndata: \xc3\xa9t\xc3\xa9\r\n\r\n"
    )
    expected = [Retry(1500), Comment("beat"), ServerSentEvent("été", "progress", "1")]
    assert SSEDecoder().receive_data(wire) == expected
    for cut in range(1, len(wire)):
        decoder = SSEDecoder()
        assert decoder.receive_data(wire[:cut]) + decoder.receive_data(wire[cut:]) == expected
    decoder = SSEDecoder()
    assert [item for byte in wire for item in decoder.receive_data(bytes([byte]))] == expected


def test_last_event_id_persists_across_events() -> None:
    """§9.2.6: the last event ID buffer keeps its value until another id field sets it."""
    decoder = SSEDecoder()
    events = decoder.receive_data(b"id: 5\ndata: a\n\ndata: b\n\n")
    assert [e.id for e in events if isinstance(e, ServerSentEvent)] == ["5", "5"]
    assert decoder.last_event_id == "5"


def test_fields_without_data_dispatch_nothing_and_unknown_fields_are_ignored() -> None:
    """§9.2.6: an event with an empty data buffer is not dispatched; unknown fields are ignored."""
    assert SSEDecoder().receive_data(b"event: x\nfoo: bar\n\n") == []
    assert SSEDecoder().receive_data(b"retry: soon\n\n") == []


def test_helpers_encode_comments_and_retry() -> None:
    assert encode_comment() == b":\n\n"
    assert encode_comment("heartbeat") == b": heartbeat\n\n"
    assert encode_retry(2000) == b"retry: 2000\n\n"


def test_newline_in_id_or_event_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_event("x", id="1\n2")
    with pytest.raises(ValueError):
        encode_event("x", event="a\rb")


def test_an_endless_line_is_a_protocol_error() -> None:
    decoder = SSEDecoder(max_line=16)
    with pytest.raises(ProtocolError):
        decoder.receive_data(b"data: " + b"x" * 32)

"""The writing half of wirelab.proto.http1: events in, bytes out, and our own parsers read them back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wirelab.proto.http1 import (
    Data,
    EndOfMessage,
    Request,
    RequestParser,
    Response,
    ResponseEvent,
    ResponseParser,
    write,
)


def test_a_request_head_is_its_line_then_its_fields() -> None:
    """RFC 9112 §3: request-line CRLF, field lines each ending in CRLF, then an empty line."""
    head = Request(b"GET", b"/a?b=1", b"1.1", ((b"host", b"x"), (b"accept", b"*/*")))
    assert write(head) == b"GET /a?b=1 HTTP/1.1\r\nhost: x\r\naccept: */*\r\n\r\n"


def test_a_response_head_keeps_an_empty_reason() -> None:
    """RFC 9112 §4: the reason phrase may be empty; the space before it may not be left out."""
    assert write(Response(204, b"", b"1.1", ())) == b"HTTP/1.1 204 \r\n\r\n"
    assert write(Response(200, b"OK", b"1.0", ((b"content-length", b"2"),))).startswith(
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n"
    )


def test_chunked_framing_and_trailers() -> None:
    """RFC 9112 §7.1: hex size CRLF data CRLF; the last chunk, trailer fields, an empty line."""
    assert write(Data(b"x" * 26), chunked=True) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert write(Data(b""), chunked=True) == b""  # a zero-size chunk would end the body
    assert write(EndOfMessage(), chunked=True) == b"0\r\n\r\n"
    assert write(EndOfMessage(((b"grpc-status", b"0"),)), chunked=True) == b"0\r\ngrpc-status: 0\r\n\r\n"


def test_without_chunking_data_is_itself_and_the_end_is_nothing() -> None:
    assert write(Data(b"abc")) == b"abc"
    assert write(EndOfMessage()) == b""


_name = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode)
_value = st.text("abcdefghijklmnopqrstuvwxyz0123456789 ;=/", max_size=20).map(lambda v: v.strip().encode())
_fields = st.lists(st.tuples(_name, _value), max_size=6).map(
    lambda fields: tuple(
        f for f in fields if f[0] not in (b"host", b"content-length", b"transfer-encoding")
    )
)


@given(_fields, st.lists(st.binary(min_size=1, max_size=50), max_size=5), _fields)
def test_a_chunked_request_written_parses_back_to_its_events(
    fields: tuple[tuple[bytes, bytes], ...], chunks: list[bytes], trailers: tuple[tuple[bytes, bytes], ...]
) -> None:
    head = Request(b"POST", b"/up", b"1.1", ((b"host", b"h"), *fields, (b"transfer-encoding", b"chunked")))
    wire = write(head) + b"".join(write(Data(c), chunked=True) for c in chunks)
    wire += write(EndOfMessage(trailers), chunked=True)
    events = RequestParser().receive_data(wire)
    assert events[0] == head
    assert b"".join(e.data for e in events if isinstance(e, Data)) == b"".join(chunks)
    assert events[-1] == EndOfMessage(trailers)


@given(st.integers(200, 599).filter(lambda s: s not in (204, 304)), st.binary(max_size=100))
def test_a_sized_response_written_parses_back(status: int, body: bytes) -> None:
    head = Response(status, b"Whatever", b"1.1", ((b"content-length", b"%d" % len(body)),))
    events: list[ResponseEvent] = ResponseParser().receive_data(write(head) + write(Data(body)))
    assert events[0] == head
    assert b"".join(e.data for e in events if isinstance(e, Data)) == body
    assert isinstance(events[-1], EndOfMessage)

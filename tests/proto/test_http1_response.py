"""The strict HTTP/1.1 response parser the proxies read backends with (RFC 9112 §4, §6.3)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirelab.http.llhttp import LlhttpResponseParser
from wirelab.proto.http1 import (
    Data,
    EndOfMessage,
    HTTPResponseError,
    Response,
    ResponseEvent,
    ResponseParser,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"


@pytest.fixture(autouse=True, params=[ResponseParser, LlhttpResponseParser], ids=["python", "llhttp"])
def parser_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs against both parsers: ours and llhttp's behind the same interface."""
    monkeypatch.setitem(globals(), "ResponseParser", request.param)


def events(wire: bytes, *, method: bytes = b"GET", parser: ResponseParser | None = None) -> list[object]:
    parser = parser or ResponseParser()
    parser.expect(method)
    out: list[ResponseEvent] = parser.receive_data(wire)
    return [type(e).__name__ if not isinstance(e, Data) else e.data for e in out]


def test_a_sized_response_then_another_on_the_same_connection() -> None:
    parser = ResponseParser()
    parser.expect(b"GET")
    first = parser.receive_data(OK)
    assert first[0] == Response(
        200, b"OK", b"1.1", ((b"content-type", b"text/plain"), (b"content-length", b"2"))
    )
    assert first[1:] == [Data(b"ok"), EndOfMessage()]
    assert parser.keep_alive and parser.idle
    assert events(OK, parser=parser) == ["Response", b"ok", "EndOfMessage"]


def test_chunked_body_is_decoded() -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n3\r\nyou\r\n0\r\n\r\n"
    assert events(wire) == ["Response", b"hi", b"you", "EndOfMessage"]


@pytest.mark.parametrize(("method", "status"), [(b"HEAD", 200), (b"GET", 204), (b"GET", 304)])
def test_no_body_after_head_and_for_204_and_304(method: bytes, status: int) -> None:
    """RFC 9112 §6.3 rules 1: whatever the length fields say, these responses end with their head."""
    wire = b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status
    assert events(wire, method=method) == ["Response", "EndOfMessage"]


def test_interim_responses_come_before_the_final_one() -> None:
    wire = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    assert events(wire) == ["Response", "Response", "Response", b"ok", "EndOfMessage"]


def test_101_hands_the_connection_over_with_what_followed() -> None:
    parser = ResponseParser()
    parser.expect(b"GET")
    out = parser.receive_data(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi")
    assert [e.status for e in out if isinstance(e, Response)] == [101]
    assert parser.tunnel and parser.trailing_data == b"\x81\x02hi"


@pytest.mark.parametrize("connection", [b"", b"Connection: upgrade\r\n"])
def test_the_tunnel_after_a_101_starts_at_the_same_byte_however_the_reads_fall(connection: bytes) -> None:
    wire = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        + connection
        + b"\r\n\r\n\r\n\x81\x02hi"
    )
    for cut in range(1, len(wire)):
        parser = ResponseParser()
        parser.expect(b"GET")
        out = parser.receive_data(wire[:cut]) + parser.receive_data(wire[cut:])
        assert [e.status for e in out if isinstance(e, Response)] == [100, 101], cut
        assert parser.tunnel and parser.trailing_data == b"\r\n\r\n\x81\x02hi", cut


def test_without_framing_the_body_runs_to_the_close() -> None:
    """RFC 9112 §6.3 rule 8; such a connection cannot be reused."""
    parser = ResponseParser()
    parser.expect(b"GET")
    assert parser.receive_data(b"HTTP/1.0 200 OK\r\n\r\nabc") == [
        Response(200, b"OK", b"1.0", ()),
        Data(b"abc"),
    ]
    assert parser.receive_data(b"def") == [Data(b"def")]
    assert parser.receive_data(b"") == [EndOfMessage()]
    assert not parser.keep_alive and not parser.idle


@pytest.mark.parametrize(
    "wire",
    [
        b"",  # closed before answering
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab",  # closed mid-body
        b"HTTP/2 200\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
    ],
)
def test_a_broken_backend_is_a_clear_error(wire: bytes) -> None:
    parser = ResponseParser()
    parser.expect(b"GET")
    with pytest.raises(HTTPResponseError):
        parser.receive_data(wire)
        parser.receive_data(b"")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"GET", b"HEAD"]))
def test_any_bytes_are_parsed_or_refused_never_a_crash(wire: bytes, method: bytes) -> None:
    parser = ResponseParser()
    parser.expect(method)
    try:
        parser.receive_data(b"HTTP/1.1 200 OK\r\n" + wire)
        parser.receive_data(b"")
    except HTTPResponseError:
        pass

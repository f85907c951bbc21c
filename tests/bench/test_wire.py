"""The lean clients' HTTP pieces: bytes in, what they completed out."""

from __future__ import annotations

import pytest

from wirelab.bench.wire import ChunkedDecoder, http_get, split_head, ws_handshake
from wirelab.errors import ProtocolError


def test_handshake_is_a_get_with_the_upgrade_headers() -> None:
    request = ws_handshake("127.0.0.1:1", "/ws", "a2V5")
    assert request.startswith(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:1\r\n")
    assert b"Upgrade: websocket\r\n" in request
    assert b"Sec-WebSocket-Key: a2V5\r\n" in request
    assert request.endswith(b"\r\n\r\n")


def test_split_head_waits_for_the_blank_line_then_leaves_the_body() -> None:
    buffer = bytearray(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
    assert split_head(buffer) is None
    buffer += b"X-Feed-Version: 3\r\n\r\nhi"
    head = split_head(buffer)
    assert head is not None
    assert head.status == 200
    assert head.headers == {"content-length": "2", "x-feed-version": "3"}
    assert buffer == b"hi"


def test_split_head_refuses_what_is_not_http() -> None:
    with pytest.raises(ProtocolError):
        split_head(bytearray(b"SSH-2.0-OpenSSH\r\n\r\n"))


def test_chunked_body_decodes_whatever_the_split() -> None:
    """RFC 9112 §7.1: sizes in hex, optional extensions, a zero chunk ends the body."""
    wire = b"d\r\nretry: 2000\n\n\r\n4;ext=1\r\nabcd\r\n0\r\n\r\n"
    for cut in range(len(wire)):
        decoder = ChunkedDecoder()
        body = decoder.receive_data(wire[:cut]) + decoder.receive_data(wire[cut:])
        assert body == b"retry: 2000\n\nabcd"
        assert decoder.done


def test_chunked_size_must_be_hexadecimal() -> None:
    with pytest.raises(ProtocolError):
        ChunkedDecoder().receive_data(b"zz\r\n")


def test_http_get_has_the_host_and_extra_headers() -> None:
    request = http_get("h:1", "/x?a=1", (("Last-Event-ID", "7"),))
    assert request == b"GET /x?a=1 HTTP/1.1\r\nHost: h:1\r\nLast-Event-ID: 7\r\n\r\n"

"""The lean clients' sans-I/O pieces: bytes in, what they completed out."""

from __future__ import annotations

import pytest

from wirelab.bench.wire import (
    OP_BINARY,
    OP_PING,
    OP_TEXT,
    ChunkedDecoder,
    Frame,
    FrameReader,
    encode_client_frame,
    http_get,
    split_head,
    ws_accept,
    ws_handshake,
)
from wirelab.errors import ProtocolError


def test_ws_accept_known_answer() -> None:
    """RFC 6455 §1.3: the sample nonce and the accept value it must produce."""
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


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


def _server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    if len(payload) < 126:
        return bytes([first, len(payload)]) + payload
    return bytes([first, 126]) + len(payload).to_bytes(2, "big") + payload


def test_frame_reader_handles_lengths_and_byte_by_byte_arrival() -> None:
    """RFC 6455 §5.2: 7-bit and 16-bit payload lengths."""
    wire = _server_frame(OP_TEXT, b"hello") + _server_frame(OP_BINARY, b"x" * 300)
    reader = FrameReader()
    frames = [frame for byte in wire for frame in reader.receive_data(bytes([byte]))]
    assert frames == [Frame(OP_TEXT, b"hello"), Frame(OP_BINARY, b"x" * 300)]


def test_frame_reader_reassembles_fragments_around_a_ping() -> None:
    """RFC 6455 §5.4: control frames may be injected in the middle of a fragmented message."""
    wire = (
        _server_frame(OP_TEXT, b"hel", fin=False)
        + _server_frame(OP_PING, b"p")
        + _server_frame(0x0, b"lo", fin=True)
    )
    assert FrameReader().receive_data(wire) == [Frame(OP_PING, b"p"), Frame(OP_TEXT, b"hello")]


def test_frame_reader_refuses_masked_server_frames_and_oversized_ones() -> None:
    """RFC 6455 §5.1: a client must fail the connection if a server frame is masked."""
    with pytest.raises(ProtocolError, match="mask"):
        FrameReader().receive_data(b"\x81\x85" + b"\0" * 9)
    with pytest.raises(ProtocolError, match="limit"):
        FrameReader(max_size=10).receive_data(_server_frame(OP_TEXT, b"x" * 11))


@pytest.mark.parametrize("size", [0, 5, 125, 126, 70_000])
def test_client_frames_are_masked_and_unmask_to_the_payload(size: int) -> None:
    """RFC 6455 §5.3: every client frame carries a mask key and a masked payload."""
    payload = bytes(i % 251 for i in range(size))
    key = b"\x01\x02\x03\x04"
    frame = encode_client_frame(OP_TEXT, payload, key)
    assert frame[0] == 0x81
    assert frame[1] & 0x80
    offset = {True: 2, False: 4 if size < 1 << 16 else 10}[size < 126]
    assert frame[offset : offset + 4] == key
    masked = frame[offset + 4 :]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == payload


def test_http_get_has_the_host_and_extra_headers() -> None:
    request = http_get("h:1", "/x?a=1", (("Last-Event-ID", "7"),))
    assert request == b"GET /x?a=1 HTTP/1.1\r\nHost: h:1\r\nLast-Event-ID: 7\r\n\r\n"

"""WebSocket frames (RFC 6455 §5.2) both ways, checked against §5.7's example and websockets' own
parser; the accept key against §1.3's sample."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from wirelab.errors import ProtocolError
from wirelab.proto.wsframe import (
    OP_BINARY,
    OP_PING,
    OP_TEXT,
    FrameReader,
    accept_key,
    encode_frame,
    encode_text_frame,
)
from wirelab.proto.wsframe import Frame as OurFrame


def test_the_rfc_example_single_frame_unmasked_text() -> None:
    """§5.7: a single-frame unmasked text message "Hello"."""
    assert encode_text_frame("Hello") == bytes([0x81, 0x05, 0x48, 0x65, 0x6C, 0x6C, 0x6F])


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 70000])
def test_every_length_encoding_parses_back(size: int) -> None:
    """§5.2: 7-bit, 16-bit and 64-bit payload lengths."""
    text = "é" * (size // 2) + "x" * (size % 2)
    reader = StreamReader()
    reader.feed_data(encode_text_frame(text))
    parser = Frame.parse(reader.read_exact, mask=False)
    with pytest.raises(StopIteration) as done:
        next(parser)
    frame = done.value.value
    assert frame.opcode is Opcode.TEXT and frame.fin and frame.data.decode() == text


def test_accept_key_known_answer() -> None:
    """RFC 6455 §1.3: the sample nonce and the accept value it must produce."""
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


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
    assert frames == [OurFrame(OP_TEXT, b"hello"), OurFrame(OP_BINARY, b"x" * 300)]


def test_frame_reader_reassembles_fragments_around_a_ping() -> None:
    """RFC 6455 §5.4: control frames may be injected in the middle of a fragmented message."""
    wire = (
        _server_frame(OP_TEXT, b"hel", fin=False)
        + _server_frame(OP_PING, b"p")
        + _server_frame(0x0, b"lo", fin=True)
    )
    assert FrameReader().receive_data(wire) == [OurFrame(OP_PING, b"p"), OurFrame(OP_TEXT, b"hello")]


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
    frame = encode_frame(OP_TEXT, payload, mask_key=key)
    assert frame[0] == 0x81
    assert frame[1] & 0x80
    offset = {True: 2, False: 4 if size < 1 << 16 else 10}[size < 126]
    assert frame[offset : offset + 4] == key
    masked = frame[offset + 4 :]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(masked)) == payload

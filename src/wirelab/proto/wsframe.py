"""WebSocket frames (RFC 6455 §5.2) both ways, and the handshake's accept key (§4.2.2). Pure.

A server's frames are never masked (§5.1) and, without compression, a message's frame is the same bytes
for every connection: a fan-out encodes a message once and writes that one buffer to every socket, as
`websockets.broadcast()` does too. A client's frames must be masked (§5.3); the caller passes the mask
key, so nothing here reads a clock or a random source. `FrameReader` reads a server's frames for the
bench's lean clients, with fragmented messages reassembled and size limits inside the parser.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from wirelab.errors import ProtocolError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Frame",
    "FrameReader",
    "accept_key",
    "encode_frame",
    "encode_text_frame",
]

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_FRAME = 1 << 20
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer `key` with (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


@dataclass(frozen=True, slots=True)
class Frame:
    opcode: int
    payload: bytes


class FrameReader:
    """Server-to-client frames (RFC 6455 §5.2), unmasked, with fragmented messages reassembled."""

    def __init__(self, *, max_size: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max_size = max_size
        self._fragments: list[bytes] = []
        self._first_opcode = 0

    def receive_data(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while (raw := self._next_raw()) is not None:
            frame = self._assemble(*raw)
            if frame is not None:
                frames.append(frame)
        return frames

    def _next_raw(self) -> tuple[bool, int, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        if buffer[1] & 0x80:
            raise ProtocolError("a server must not mask its frames (RFC 6455 §5.1)")
        length, offset = buffer[1] & 0x7F, 2
        if length >= 126:
            offset = 4 if length == 126 else 10
            if len(buffer) < offset:
                return None
            length = int.from_bytes(buffer[2:offset], "big")
        if length > self._max_size:
            raise ProtocolError(f"a frame of {length} bytes is over the {self._max_size}-byte limit")
        if len(buffer) < offset + length:
            return None
        fin, opcode = bool(buffer[0] & 0x80), buffer[0] & 0x0F
        payload = bytes(buffer[offset : offset + length])
        del buffer[: offset + length]
        return fin, opcode, payload

    def _assemble(self, fin: bool, opcode: int, payload: bytes) -> Frame | None:
        if opcode >= OP_CLOSE or (fin and opcode != OP_CONTINUATION and not self._fragments):
            return Frame(opcode, payload)  # control frames may arrive between fragments
        if opcode != OP_CONTINUATION:
            self._first_opcode = opcode
        self._fragments.append(payload)
        if sum(map(len, self._fragments)) > self._max_size:
            raise ProtocolError(f"a message is over the {self._max_size}-byte limit")
        if not fin:
            return None
        message, self._fragments = b"".join(self._fragments), []
        return Frame(self._first_opcode, message)


def encode_frame(opcode: int, payload: bytes, *, mask_key: bytes | None = None) -> bytes:
    """One final frame; a client's must be masked with a 4-byte `mask_key` (§5.3), a server's not."""
    length = len(payload)
    mask_bit = 0 if mask_key is None else 0x80
    if length < 126:
        header = bytes((0x80 | opcode, mask_bit | length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, length)
    if mask_key is None:
        return header + payload
    if len(mask_key) != 4:
        raise ValueError("a mask key is 4 bytes")
    return header + mask_key + _mask(payload, mask_key)


def encode_text_frame(text: str) -> bytes:
    """A server's text message, encoded once for any number of sockets."""
    return encode_frame(OP_TEXT, text.encode())


def _mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the key repeated, done as one big-integer operation instead of a byte loop."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(payload), "big")

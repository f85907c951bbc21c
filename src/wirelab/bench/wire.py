"""Just enough HTTP/1.1 (RFC 9112) and WebSocket (RFC 6455) for thousands of lean bench clients.

Theory of operation: the fan-out bench holds ten thousand idle subscribers in one or two client
processes, and a general-purpose client costs more per connection than the server under test, which
would make the load generator the thing measured. So the subscribers speak the few messages they need
through these sans-I/O pieces: request builders that return bytes, a response-head splitter, a
chunked-body decoder and a server-frame reader that are fed bytes and return what those bytes
completed, and a client-frame encoder (client frames must be masked, RFC 6455 §5.3; the caller
passes the mask key, so nothing here reads a clock or a random source). Size limits live inside the
parsers, which raise ProtocolError rather than buffer without end.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from wirelab.errors import ProtocolError

__all__ = [
    "OP_BINARY",
    "OP_CLOSE",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "ChunkedDecoder",
    "Frame",
    "FrameReader",
    "Head",
    "encode_client_frame",
    "http_get",
    "split_head",
    "ws_accept",
    "ws_handshake",
]

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_HEAD = 16 * 1024
MAX_FRAME = 1 << 20
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def http_get(host: str, target: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def ws_handshake(host: str, path: str, key: str) -> bytes:
    """The opening handshake (RFC 6455 §4.1); `key` is 16 random bytes, base64-encoded."""
    headers = (
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    )
    return http_get(host, path, headers)


def ws_accept(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer `key` with (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()


@dataclass(frozen=True, slots=True)
class Head:
    status: int
    headers: dict[str, str]


def split_head(buffer: bytearray) -> Head | None:
    """Take a complete response head off the front of `buffer`; None while it is incomplete."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        if len(buffer) > MAX_HEAD:
            raise ProtocolError(f"a response head is longer than {MAX_HEAD} bytes")
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    version, _, rest = lines[0].partition(" ")
    status = rest[:3]
    if not version.startswith("HTTP/1.") or not status.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Head(int(status), headers)


class ChunkedDecoder:
    """Transfer-Encoding: chunked (RFC 9112 §7.1) to body bytes, however the chunks are split."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._remaining = 0
        self._want_crlf = False
        self.done = False

    def receive_data(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while not self.done and self._step(out):
            pass
        return bytes(out)

    def _step(self, out: bytearray) -> bool:
        """Consume one piece (data, a CRLF, or a size line); False when more bytes are needed."""
        buffer = self._buffer
        if self._remaining:
            taken = buffer[: self._remaining]
            if not taken:
                return False
            out += taken
            del buffer[: len(taken)]
            self._remaining -= len(taken)
            self._want_crlf = self._remaining == 0
            return True
        if self._want_crlf:
            if len(buffer) < 2:
                return False
            del buffer[:2]
            self._want_crlf = False
            return True
        return self._size_line()

    def _size_line(self) -> bool:
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) > 1024:
                raise ProtocolError("a chunk size line is too long")
            return False
        try:
            size = int(bytes(self._buffer[:end]).split(b";")[0], 16)
        except ValueError:
            raise ProtocolError("a chunk size is not hexadecimal") from None
        del self._buffer[: end + 2]
        self._remaining = size
        self.done = size == 0
        return True


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


def encode_client_frame(opcode: int, payload: bytes, mask_key: bytes) -> bytes:
    """One final frame, masked with the 4-byte `mask_key` as every client frame must be."""
    if len(mask_key) != 4:
        raise ValueError("a mask key is 4 bytes")
    length = len(payload)
    if length < 126:
        header = bytes([0x80 | opcode, 0x80 | length])
    elif length < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
    return header + mask_key + _mask(payload, mask_key)


def _mask(payload: bytes, key: bytes) -> bytes:
    """XOR with the key repeated, done as one big-integer operation instead of a byte loop."""
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(len(payload), "big")

"""Just enough HTTP/1.1 (RFC 9112) for thousands of lean bench clients (their WebSocket frames are
`wirelab.proto.wsframe`'s).

Theory of operation: the fan-out bench holds ten thousand idle subscribers in one or two client
processes, and a general-purpose client costs more per connection than the server under test, which
would make the load generator the thing measured. So the subscribers speak the few messages they need
through these sans-I/O pieces: request builders that return bytes, and a response-head splitter and
a chunked-body decoder that are fed bytes and return what those bytes completed. Size limits live
inside the parsers, which raise ProtocolError rather than buffer without end.
"""

from __future__ import annotations

from dataclasses import dataclass

from wirelab.errors import ProtocolError

__all__ = ["ChunkedDecoder", "Head", "http_get", "split_head", "ws_handshake"]

MAX_HEAD = 16 * 1024


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

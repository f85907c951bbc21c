"""Server-Sent Events framing (WHATWG HTML, "Server-sent events", section 9.2), both directions.

Theory of operation: an event stream is UTF-8 text cut into lines; a blank line dispatches the event
gathered so far. `encode_event` writes one event; `SSEDecoder` is fed arbitrary chunks of bytes (a line
may be split anywhere, even inside a CRLF) and yields `ServerSentEvent`s and `Retry` hints. The decoder
remembers the last event id across events, exactly as a browser's EventSource does, since that is
what a client sends back as Last-Event-ID when it resumes.
"""

from __future__ import annotations

from dataclasses import dataclass

from wirelab.errors import ProtocolError

__all__ = [
    "Comment",
    "Retry",
    "SSEDecoder",
    "ServerSentEvent",
    "encode_comment",
    "encode_event",
    "encode_retry",
]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str = ""


@dataclass(frozen=True, slots=True)
class Retry:
    """The server's reconnection hint, in milliseconds."""

    milliseconds: int


@dataclass(frozen=True, slots=True)
class Comment:
    """A comment line; servers send them as heartbeats."""

    text: str


def encode_event(data: str, *, event: str | None = None, id: str | None = None) -> bytes:
    """One event; multi-line data becomes several `data:` lines, as the format requires."""
    parts = []
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            raise ValueError("an event id cannot hold a newline or NUL")
        parts.append(f"id: {id}\n")
    if event is not None:
        if "\n" in event or "\r" in event:
            raise ValueError("an event name cannot hold a newline")
        parts.append(f"event: {event}\n")
    for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        parts.append(f"data: {line}\n")
    parts.append("\n")
    return "".join(parts).encode()


def encode_comment(text: str = "") -> bytes:
    return f": {text}\n\n".encode() if text else b":\n\n"


def encode_retry(milliseconds: int) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


class SSEDecoder:
    """Incremental parser; `receive_data` returns what the new bytes completed."""

    def __init__(self, *, max_line: int = 1 << 20) -> None:
        self._buffer = bytearray()
        self._max_line = max_line
        self._skip_lf = False
        self._started = False
        self._data: list[str] = []
        self._event = ""
        self.last_event_id = ""

    def receive_data(self, data: bytes) -> list[ServerSentEvent | Retry | Comment]:
        self._buffer += data
        out: list[ServerSentEvent | Retry | Comment] = []
        while (line := self._next_line()) is not None:
            item = self._process(line)
            if item is not None:
                out.append(item)
        if len(self._buffer) > self._max_line:
            raise ProtocolError(f"an event stream line is longer than {self._max_line} bytes")
        return out

    def _next_line(self) -> str | None:
        if self._skip_lf and self._buffer:  # a CR ended the last line: drop the LF of a CRLF
            if self._buffer[0] == 0x0A:
                del self._buffer[:1]
            self._skip_lf = False
        cr, lf = self._buffer.find(b"\r"), self._buffer.find(b"\n")
        index = min(i for i in (cr, lf, len(self._buffer)) if i >= 0)
        if index == len(self._buffer):
            return None
        raw = bytes(self._buffer[:index])
        self._skip_lf = index == cr
        del self._buffer[: index + 1]
        return self._decode(raw)

    def _decode(self, raw: bytes) -> str:
        if not self._started:
            self._started = True
            raw = raw.removeprefix(b"\xef\xbb\xbf")
        return raw.decode("utf-8", errors="replace")

    def _process(self, line: str) -> ServerSentEvent | Retry | Comment | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return Comment(line[1:].lstrip(" "))
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            return Retry(int(value))
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], ""
        if not data:
            return None
        return ServerSentEvent("\n".join(data), event or "message", self.last_event_id)

"""HTTP/1.1 parsing for proxies (RFC 9112): the head, the body's framing, and nothing it can doubt.

Theory of operation: `RequestParser` is fed bytes split anywhere and returns events, `Request` then
`Data`... then `EndOfMessage`, for each request on a keep-alive connection. When a whole head is
buffered (the usual case) it is checked and split in one pass; otherwise, and to name what is wrong
with a bad head, it is consumed one line at a time (the start line, each field line, each chunk-size
line), looking for a line's end only within its limit, so an oversized head is refused as soon as it
passes the limit and memory stays bounded whatever the client sends. Body bytes are handed out as
they arrive, never held. Good requests ahead of a refused one in the same bytes are handed out
first; the refusal comes with the next call (`error` tells it is pending).

A proxy is where request smuggling happens: two parsers that disagree on where a request ends let an
attacker hide a second request inside the first one's body. So this parser accepts only the one
unambiguous reading of RFC 9112 and refuses the rest with `HTTPRequestError`, which carries the status
to answer (400, 413, 414, 431, 501, 505); the connection must then be closed, because nobody can know
where the next request would start. Refused: Content-Length together with Transfer-Encoding (§6.3),
more than one Content-Length, anything but digits in one, a Transfer-Encoding whose last coding is
not chunked, obsolete line folding (§5.2), bare CR or LF line ends (§2.2), whitespace before a
field's colon (§5.1), chunk sizes that are not plain hex, and a missing or repeated Host (§3.2).

After a CONNECT request the bytes are no longer HTTP: the parser stops in the tunnel state and hands
over what it had buffered through `trailing_data`.

`ResponseParser` reads a backend's responses with the same rules for fields, bodies and chunks; only
the start line and the framing differ (RFC 9112 §6.3): no body after HEAD or for 1xx, 204 and 304,
interim 1xx before the final response, 101 handing the connection over, and a body without
Content-Length or chunked running to the close. A broken backend raises `HTTPResponseError`. The
proxies use it instead of h11 so that every request is parsed once on each side, by rules we own.

`write` is the other half, in h11's shape: an event in, its bytes out. A head is written as given
(fields in order, names as they are); body data is framed as a chunk, and the end of a message as the
last chunk with its trailers, when the message is chunked. Callers decide the framing, because it
depends on the message's fields and its peer's version, which they hold.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

from wirelab.errors import ProtocolError

__all__ = [
    "Body",
    "Chunked",
    "Data",
    "EndOfMessage",
    "Event",
    "HTTPRequestError",
    "HTTPResponseError",
    "Headers",
    "Limits",
    "Request",
    "RequestParser",
    "Response",
    "ResponseEvent",
    "ResponseParser",
    "Sized",
    "keeps_alive",
    "request_framing",
    "response_framing",
    "write",
]

Headers = tuple[tuple[bytes, bytes], ...]
"""Field lines in arrival order; names lowercased (they are case-insensitive), values as sent."""

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_FIELD_LINE = re.compile(  # name, then the value without the optional whitespace around it
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)[ \t]*"
)
_DIGITS = re.compile(rb"[0-9]{1,18}")
_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(;[\t\x20-\x7e\x80-\xff]*)?")


class HTTPRequestError(ProtocolError):
    """A request we refuse: answer `status`, then close the connection (its framing is now unknown)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status} {detail}")
        self.status = status
        self.detail = detail

    @property
    def title(self) -> str:
        return HTTPStatus(self.status).phrase


class HTTPResponseError(ProtocolError):
    """A backend broke HTTP/1.1: the proxy answers 502 and drops the connection."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Message:
    """What requests and responses share: their fields, read by name."""

    __slots__ = ()
    headers: Headers

    def values(self, name: bytes) -> list[bytes]:
        """Every value of the field `name` (lowercase), in order."""
        return [value for key, value in self.headers if key == name]

    def tokens(self, name: bytes) -> list[bytes]:
        """The comma-separated list elements of every `name` field, lowercased (RFC 9110 §5.6.1)."""
        return [item.strip(b" \t").lower() for value in self.values(name) for item in value.split(b",")]


@dataclass(frozen=True, slots=True)
class Request(Message):
    method: bytes
    target: bytes
    version: bytes
    """b"1.0" or b"1.1"; a later HTTP/1 minor version is read as 1.1, as RFC 9112 §2.3 asks."""
    headers: Headers


@dataclass(frozen=True, slots=True)
class Data:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfMessage:
    trailers: Headers = ()


@dataclass(frozen=True, slots=True)
class Response(Message):
    status: int
    reason: bytes
    version: bytes
    """b"1.0" or b"1.1"."""
    headers: Headers


Event = Request | Data | EndOfMessage
ResponseEvent = Response | Data | EndOfMessage
AnyEvent = Request | Response | Data | EndOfMessage


@dataclass(frozen=True, slots=True)
class Limits:
    """Sizes past which a request is refused: the defence against heads that never end."""

    max_request_line: int = 8192
    max_header_bytes: int = 65536
    max_headers: int = 100
    max_chunk_line: int = 4096
    max_body_bytes: int | None = None
    """None: unlimited. A larger Content-Length is refused with 413 as soon as the head is parsed, a
    chunked body at the chunk size line that takes it over the limit, before that chunk's data."""


class _State(enum.IntEnum):
    REQUEST_LINE = enum.auto()
    HEADERS = enum.auto()
    LENGTH = enum.auto()
    CHUNK_SIZE = enum.auto()
    CHUNK_DATA = enum.auto()
    CHUNK_END = enum.auto()
    TRAILERS = enum.auto()
    TUNNEL = enum.auto()
    UNTIL_CLOSE = enum.auto()
    CLOSED = enum.auto()


class _MessageParser:
    """What parsing a request and a response share: the start line's step and the head's framing
    differ (the subclasses'), the field lines, bodies, chunks and trailers do not."""

    def __init__(self, *, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buffer = bytearray()
        self._state = _State.REQUEST_LINE
        self._error: HTTPRequestError | None = None
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._remaining = 0
        self._body_bytes = 0
        self.keep_alive = True
        """Whether another request may follow the current one (RFC 9112 §9.3); false once refused."""
        # Each step consumes what it can: None means it needs more bytes, a list is what it produced.
        self._steps: dict[_State, Callable[[], list[AnyEvent] | None]] = {
            _State.REQUEST_LINE: self._start_line,
            _State.HEADERS: self._header_line,
            _State.LENGTH: self._length_data,
            _State.CHUNK_SIZE: self._chunk_size,
            _State.CHUNK_DATA: self._chunk_data,
            _State.CHUNK_END: self._chunk_end,
            _State.TRAILERS: self._trailer_line,
            _State.UNTIL_CLOSE: self._until_close,
        }

    @property
    def tunnel(self) -> bool:
        """True after a CONNECT request's head or a 101 response: the rest is another protocol."""
        return self._state is _State.TUNNEL

    @property
    def trailing_data(self) -> bytes:
        """Bytes received after the head that started a tunnel; they belong to it."""
        return bytes(self._buffer) if self._state is _State.TUNNEL else b""

    @property
    def error(self) -> HTTPRequestError | None:
        """The refusal this connection ended with, once there is one (every later call raises it)."""
        return self._error

    def _parse(self, data: bytes) -> list[AnyEvent]:
        """Feed bytes; b"" means the peer closed its side. Returns the events they completed.

        When the bytes hold good messages and then a bad one, the good ones' events are returned
        and the refusal is raised by the next call (pipelined requests before a refused one are
        still answered, in order)."""
        if self._error is not None:
            raise self._error
        events: list[AnyEvent] = []
        try:
            self._events(data, events)
        except HTTPRequestError as error:
            self._fail(error)
            if not events:
                raise
        return events

    def _events(self, data: bytes, events: list[AnyEvent]) -> None:
        if not data:
            events += self._end_of_input()
            return
        if self._state is _State.CLOSED:
            return
        self._buffer += data
        while (step := self._steps.get(self._state)) and (produced := step()) is not None:
            events += produced

    def _start_line(self) -> list[AnyEvent] | None:
        if not self._buffer:
            return None
        while self._buffer.startswith(b"\r\n"):  # RFC 9112 §2.2: ignore empty lines before a message
            del self._buffer[:2]
        head = self._whole_head()
        if head is not None:
            self._parse_start(head[0])
            return self._head(tuple(_parse_field_line(line) for line in head[1:]))
        line = self._line(self.limits.max_request_line, self._start_line_too_long)
        if line is None:
            return None
        self._parse_start(line)
        self._fields, self._head_bytes = [], 0
        self._state = _State.HEADERS
        return []

    def _whole_head(self) -> list[bytes] | None:
        """The head's lines at once when it is all buffered, well formed and within the limits: the
        usual case, in one pass instead of a step per line. Otherwise None, and the line-by-line
        steps take it (and name what is wrong with it)."""
        limits = self.limits
        end = self._buffer.find(b"\r\n\r\n", 0, limits.max_request_line + limits.max_header_bytes + 4)
        if end < 0:
            return None
        head = bytes(self._buffer[:end])
        crlf = head.count(b"\r\n")
        if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
            return None
        lines = head.split(b"\r\n")
        if (
            len(lines[0]) > limits.max_request_line
            or len(lines) > limits.max_headers + 1
            or end - len(lines[0]) > limits.max_header_bytes
        ):
            return None
        del self._buffer[: end + 4]
        return lines

    def _parse_start(self, line: bytes) -> None:
        raise NotImplementedError

    def _start_line_too_long(self) -> HTTPRequestError:
        raise NotImplementedError

    def _head(self, fields: Headers) -> list[AnyEvent]:
        """The message the head makes; its framing decides the state that follows."""
        raise NotImplementedError

    def _end_of_input(self) -> list[AnyEvent]:
        if self._state in (_State.TUNNEL, _State.CLOSED):
            return []
        if self._state is _State.UNTIL_CLOSE:
            self._state = _State.CLOSED
            return [EndOfMessage()]
        if self._state is _State.REQUEST_LINE and not self._buffer.strip(b"\r\n"):
            self._state = _State.CLOSED
            return []
        raise HTTPRequestError(400, "the connection closed in the middle of a message")

    def _fail(self, error: HTTPRequestError) -> None:
        self._error = error
        self._state = _State.CLOSED
        self.keep_alive = False
        self._buffer.clear()

    def _line(self, limit: int, too_long: Callable[[], HTTPRequestError]) -> bytes | None:
        """The next CRLF-terminated line without its CRLF, or None until it is complete."""
        end = self._buffer.find(b"\n", 0, limit + 2)
        if end < 0:
            if len(self._buffer) >= limit + 2:
                raise too_long()
            return None
        if end == 0 or self._buffer[end - 1] != 0x0D:
            raise HTTPRequestError(400, "a line ends with a bare LF; HTTP/1.1 lines end with CRLF")
        line = bytes(self._buffer[: end - 1])
        del self._buffer[: end + 1]
        if b"\r" in line:
            raise HTTPRequestError(400, "a bare CR inside a line")
        return line

    def _field_line(self) -> tuple[bytes, bytes] | bytes | None:
        """A parsed field line, b"" for the empty line ending the section, None until complete."""
        budget = self.limits.max_header_bytes - self._head_bytes
        line = self._line(max(budget, 0), self._fields_too_large)
        if not line:
            return line
        self._head_bytes += len(line) + 2
        if len(self._fields) >= self.limits.max_headers:
            raise HTTPRequestError(431, f"more than {self.limits.max_headers} header fields")
        return _parse_field_line(line)

    def _fields_too_large(self) -> HTTPRequestError:
        return HTTPRequestError(431, f"the header fields are over {self.limits.max_header_bytes} bytes")

    def _header_line(self) -> list[AnyEvent] | None:
        fields = self._field_section()
        return None if fields is None else self._head(fields)

    def _field_section(self) -> Headers | None:
        """Field lines up to the empty line ending them: the whole section, or None until it ends."""
        while isinstance(field := self._field_line(), tuple):
            self._fields.append(field)
        return None if field is None else tuple(self._fields)

    def _body(self, body: Sized | Chunked) -> None:
        """Enter the body as Content-Length or chunked framing says (RFC 9112 §6.3)."""
        self._remaining = body.length if isinstance(body, Sized) else 0
        self._body_bytes = 0
        self._count_body(self._remaining)
        self._state = _State.LENGTH if isinstance(body, Sized) else _State.CHUNK_SIZE

    def _count_body(self, size: int) -> None:
        """Add `size` announced body bytes; past `max_body_bytes` the request is refused."""
        self._body_bytes += size
        limit = self.limits.max_body_bytes
        if limit is not None and self._body_bytes > limit:
            raise HTTPRequestError(413, f"the request body is over {limit} bytes")

    def _length_data(self) -> list[AnyEvent] | None:
        if not self._remaining:
            return [self._end_message(())]
        return [self._take_data()] if self._buffer else None

    def _take_data(self) -> Data:
        data = bytes(self._buffer[: self._remaining])
        del self._buffer[: len(data)]
        self._remaining -= len(data)
        return Data(data)

    def _chunk_size(self) -> list[AnyEvent] | None:
        line = self._line(self.limits.max_chunk_line, self._chunk_line_too_long)
        if line is None:
            return None
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise HTTPRequestError(400, f"bad chunk size line {line[:40]!r}")
        self._remaining = int(match[1], 16)
        self._count_body(self._remaining)
        if self._remaining:
            self._state = _State.CHUNK_DATA
        else:
            self._fields, self._head_bytes = [], 0
            self._state = _State.TRAILERS
        return []

    def _chunk_line_too_long(self) -> HTTPRequestError:
        return HTTPRequestError(400, f"a chunk size line is over {self.limits.max_chunk_line} bytes")

    def _chunk_data(self) -> list[AnyEvent] | None:
        if not self._buffer:
            return None
        data = self._take_data()
        if not self._remaining:
            self._state = _State.CHUNK_END
        return [data]

    def _chunk_end(self) -> list[AnyEvent] | None:
        if not self._buffer or self._buffer == b"\r":
            return None
        if not self._buffer.startswith(b"\r\n"):
            raise HTTPRequestError(400, "a chunk's data does not end with CRLF where its size says")
        del self._buffer[:2]
        self._state = _State.CHUNK_SIZE
        return []

    def _trailer_line(self) -> list[AnyEvent] | None:
        trailers = self._field_section()
        return None if trailers is None else [self._end_message(trailers)]

    def _until_close(self) -> list[AnyEvent] | None:
        if not self._buffer:
            return None
        data = Data(bytes(self._buffer))
        self._buffer.clear()
        return [data]

    def _end_message(self, trailers: Headers) -> EndOfMessage:
        if self.keep_alive:
            self._state = _State.REQUEST_LINE
        else:
            self._state = _State.CLOSED
            self._buffer.clear()
        return EndOfMessage(trailers)


class RequestParser(_MessageParser):
    """Incremental, strict parser of the requests arriving on one client connection."""

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes; b"" means the client closed its side. Returns the events they completed."""
        return cast("list[Event]", self._parse(data))

    def _parse_start(self, line: bytes) -> None:
        self._request_line = _parse_request_line(line)

    def _start_line_too_long(self) -> HTTPRequestError:
        method, space, _ = bytes(self._buffer[:64]).partition(b" ")
        if space and _TOKEN.fullmatch(method):
            return HTTPRequestError(414, f"the request line is over {self.limits.max_request_line} bytes")
        return HTTPRequestError(400, "this does not start like an HTTP request")

    def _head(self, fields: Headers) -> list[AnyEvent]:
        request = Request(*self._request_line, fields)
        self.keep_alive, body = request_framing(request)
        if body is None:
            self._state = _State.TUNNEL
            return [request]
        self._body(body)
        return [request]


class ResponseParser(_MessageParser):
    """Incremental, strict parser of the responses arriving on one backend connection.

    Call `expect(method)` before each response, so that a HEAD response is known to have no body. A
    backend that breaks HTTP raises `HTTPResponseError`: answer 502 and drop the connection.
    """

    _method = b"GET"
    _status_line: tuple[int, bytes, bytes] = (0, b"", b"")

    @property
    def idle(self) -> bool:
        """Between responses on a connection that may carry another (nothing unread buffered)."""
        return self._state is _State.REQUEST_LINE and self.keep_alive and not self._buffer

    def expect(self, method: bytes) -> None:
        """The method of the request the next response answers."""
        self._method = method

    def receive_data(self, data: bytes) -> list[ResponseEvent]:
        """Feed bytes; b"" means the backend closed, which ends a body that runs to the close."""
        try:
            return cast("list[ResponseEvent]", self._parse(data))
        except HTTPRequestError as error:
            raise HTTPResponseError(error.detail) from None

    def _parse_start(self, line: bytes) -> None:
        match = _STATUS_LINE.fullmatch(line)
        if match is None:
            raise HTTPRequestError(502, f"not an HTTP/1.x status line: {line[:40]!r}")
        self._status_line = (int(match[2]), match[3] or b"", b"1.0" if match[1] == b"0" else b"1.1")

    def _start_line_too_long(self) -> HTTPRequestError:
        return HTTPRequestError(502, f"the status line is over {self.limits.max_request_line} bytes")

    def _end_of_input(self) -> list[AnyEvent]:
        if self._state in (_State.REQUEST_LINE, _State.CLOSED) and not self._buffer:
            raise HTTPRequestError(502, "the backend closed the connection before it answered")
        return super()._end_of_input()

    def _head(self, fields: Headers) -> list[AnyEvent]:
        response = Response(*self._status_line, fields)
        self.keep_alive, body = response_framing(response, self._method)
        if body is Body.TUNNEL:
            self._state = _State.TUNNEL
            return [response]
        if body is Body.INTERIM:
            self._state = _State.REQUEST_LINE  # the final response follows
            return [response]
        if body is Body.NONE:
            return [response, self._end_message(())]
        if body is Body.UNTIL_CLOSE:
            self._state = _State.UNTIL_CLOSE
            return [response]
        self._body(body)
        return [response]


def _parse_request_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    """RFC 9112 §3: method SP request-target SP HTTP-version, single spaces, nothing else."""
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HTTPRequestError(400, "a request line is: method, target, version, separated by one space")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HTTPRequestError(400, "the method is not a token")
    if not _TARGET.fullmatch(target):
        raise HTTPRequestError(400, "the request target holds a character it may not")
    match = _VERSION.fullmatch(version)
    if match is None:
        raise HTTPRequestError(400, "the version is not HTTP/<digit>.<digit>")
    if match[1] != b"1":
        raise HTTPRequestError(505, "only HTTP/1.x is spoken on this connection")
    return method, target, b"1.0" if match[2] == b"0" else b"1.1"


def _parse_field_line(line: bytes) -> tuple[bytes, bytes]:
    """RFC 9112 §5: name ":" OWS value OWS; no folding (§5.2), no space before the colon (§5.1).
    One match for a good line; a bad one is taken apart to say what is wrong with it."""
    if match := _FIELD_LINE.fullmatch(line):
        return match[1].lower(), match[2]
    if line[:1] in (b" ", b"\t"):
        raise HTTPRequestError(400, "obsolete line folding (a field line starting with whitespace)")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise HTTPRequestError(400, f"bad field name {name[:40]!r}")
    value = value.strip(b" \t")
    if not _FIELD_VALUE.fullmatch(value):
        raise HTTPRequestError(400, f"the value of {name.decode()} holds a control character")
    return name.lower(), value


class _Framing:
    """The fields a head's framing depends on, found in one pass over it."""

    __slots__ = ("codings", "connection", "hosts", "lengths")

    def __init__(self, fields: Headers) -> None:
        self.hosts = 0
        self.connection: list[bytes] = []
        self.lengths: list[bytes] = []
        self.codings: list[bytes] = []
        for name, value in fields:
            if name not in _FRAMING_FIELDS:  # most fields: one set lookup
                continue
            if name == b"host":
                self.hosts += 1
            elif name == b"content-length":
                self.lengths.append(value)
            else:
                tokens = [item.strip(b" \t").lower() for item in value.split(b",")]
                if name == b"connection":
                    self.connection += tokens
                else:
                    self.codings += tokens


_FRAMING_FIELDS = frozenset((b"host", b"connection", b"content-length", b"transfer-encoding"))


class Body(enum.Enum):
    """How a message's body is delimited, when it is not by a length or chunks."""

    NONE = enum.auto()
    UNTIL_CLOSE = enum.auto()
    """A response without Content-Length or chunked: its body runs to the close."""
    TUNNEL = enum.auto()
    """A 101 response: the rest of the connection is another protocol."""
    INTERIM = enum.auto()
    """A 1xx response other than 101: the final response follows."""


@dataclass(frozen=True, slots=True)
class Sized:
    length: int


@dataclass(frozen=True, slots=True)
class Chunked:
    pass


def request_framing(request: Request) -> tuple[bool, Sized | Chunked | None]:
    """RFC 9112 for a request head: whether the connection may carry another request after it (§9.3),
    and its body's framing (§6.3), None for a CONNECT's tunnel. Refuses (HTTPRequestError) a missing
    or repeated Host (§3.2) and every framing two parsers could read differently. Both parsers, ours
    and llhttp's (`wirelab.http.llhttp`), decide by this one function."""
    framing = _Framing(request.headers)
    if framing.hosts > 1 or (framing.hosts == 0 and request.version == b"1.1"):
        raise HTTPRequestError(400, "an HTTP/1.1 request needs exactly one Host field (RFC 9112 §3.2)")
    keep_alive = keeps_alive(request.version, framing.connection)
    if request.method == b"CONNECT":
        return keep_alive, None
    return keep_alive, _body_framing(request.version, framing)


def response_framing(response: Response, method: bytes) -> tuple[bool, Sized | Chunked | Body]:
    """RFC 9112 §6.3 for a response to `method`: whether the connection persists after it, and how
    its body is delimited: none after HEAD or for 204 and 304; 101 hands the connection over; a body
    without Content-Length or chunked runs to the close (and the connection with it)."""
    framing = _Framing(response.headers)
    keep_alive = keeps_alive(response.version, framing.connection)
    if response.status == 101:
        return keep_alive, Body.TUNNEL
    if response.status < 200:
        return keep_alive, Body.INTERIM
    if method == b"HEAD" or response.status in (204, 304):
        return keep_alive, Body.NONE
    codings = framing.codings
    if codings[-1:] != [b"chunked"] and (codings or not framing.lengths):
        return False, Body.UNTIL_CLOSE
    return keep_alive, _body_framing(response.version, framing)


def write(event: AnyEvent, *, chunked: bool = False) -> bytes:
    """The bytes of one event as HTTP/1.x sends it (`chunked`: the body's framing, for Data and
    EndOfMessage; without it, data goes as it is and the end of a message writes nothing)."""
    if isinstance(event, Request):
        return b"%b %b HTTP/%b\r\n%b\r\n" % (
            event.method,
            event.target,
            event.version,
            _lines(event.headers),
        )
    if isinstance(event, Response):
        return b"HTTP/%b %d %b\r\n%b\r\n" % (
            event.version,
            event.status,
            event.reason,
            _lines(event.headers),
        )
    if isinstance(event, Data):
        if not chunked:
            return event.data
        return b"%x\r\n%b\r\n" % (len(event.data), event.data) if event.data else b""  # 0 would end it
    return b"0\r\n%b\r\n" % _lines(event.trailers) if chunked else b""


def _lines(fields: Iterable[tuple[bytes, bytes]]) -> bytes:
    return b"".join([name + b": " + value + b"\r\n" for name, value in fields])


def keeps_alive(version: bytes, connection: list[bytes]) -> bool:
    """RFC 9112 §9.3: whether the connection may carry another message after one of HTTP/`version`
    with these Connection tokens (lowercase): 1.1 persists unless told to close, 1.0 only if asked."""
    return b"keep-alive" in connection if version == b"1.0" else b"close" not in connection


_NO_BODY = Sized(0)
_CHUNKED = Chunked()


def _body_framing(version: bytes, framing: _Framing) -> Sized | Chunked:
    """The body's framing, refusing every framing two parsers could read differently."""
    lengths, codings = framing.lengths, framing.codings
    if codings and lengths:
        raise HTTPRequestError(400, "both Content-Length and Transfer-Encoding (RFC 9112 §6.3)")
    if codings:
        _check_codings(version, codings)
        return _CHUNKED
    if len(lengths) > 1:
        raise HTTPRequestError(400, "more than one Content-Length")
    if not lengths:
        return _NO_BODY
    if not _DIGITS.fullmatch(lengths[0]):
        raise HTTPRequestError(400, f"Content-Length is not a decimal number: {lengths[0][:40]!r}")
    return Sized(int(lengths[0]))


def _check_codings(version: bytes, codings: list[bytes]) -> None:
    if version == b"1.0":
        raise HTTPRequestError(400, "Transfer-Encoding in an HTTP/1.0 request (RFC 9112 §6.1)")
    if codings[-1] != b"chunked" or b"chunked" in codings[:-1] or b"" in codings:
        raise HTTPRequestError(400, "Transfer-Encoding must end with chunked, once (RFC 9112 §6.3)")
    if len(codings) > 1:
        raise HTTPRequestError(501, f"unsupported transfer coding {codings[0].decode(errors='replace')}")

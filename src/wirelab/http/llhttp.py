"""HTTP/1.1 parsing by llhttp (Node.js's parser in C, through httptools), behind the interface of our own
`wirelab.proto.http1` parsers: bytes in, the same `Request`/`Response`, `Data`, `EndOfMessage` events
out, the same refusals.

Why a second parser: ours is written in Python and is most of what an HTTP/1.1 proxy spends per small
request (`wirelab bench lb` shows both). Why it stays as strict: llhttp runs in its strict mode
(CRLF line ends, no obsolete folding, no space before a colon, token names, no control characters in
values, plain hex chunk sizes), and every head it reads then goes through the same framing rules as
ours (`request_framing`, `response_framing`): the Host rule, one Content-Length of digits, chunked
last and once, nothing of both. The limits are ours too, counted as bytes arrive, so a head that
never ends is refused at the same size. The tests of `wirelab.proto.http1` run against both parsers.

Two things llhttp cannot be told, so they are handled here: a response to HEAD has no body whatever
its Content-Length says (httptools has no way to pass that to llhttp, so those responses go through
our parser), and the end of input ends a body that runs to the close (httptools does not expose
llhttp's finish).
"""

from __future__ import annotations

from itertools import chain

import httptools

from wirelab.proto.http1 import (
    Body,
    Chunked,
    Data,
    EndOfMessage,
    Event,
    Headers,
    HTTPRequestError,
    HTTPResponseError,
    Limits,
    Request,
    RequestParser,
    Response,
    ResponseEvent,
    ResponseParser,
    Sized,
    request_framing,
    response_framing,
)

__all__ = [
    "DEFAULT_PARSER",
    "PARSERS",
    "LlhttpRequestParser",
    "LlhttpResponseParser",
    "request_parser",
    "response_parser",
]

PARSERS = ("llhttp", "python")
"""The HTTP/1.1 parsers the lab's servers and clients can read with: llhttp (the default, the faster)
or ours, in Python (`wirelab.proto.http1`); `wirelab bench lb` runs the balancer with each."""
DEFAULT_PARSER = PARSERS[0]

_BODIES = (Sized, Chunked)
_MIDDLE = "the connection closed in the middle of a message"


class _Switched(Exception):
    """Raised from a callback to stop llhttp at the end of a 101's head: what follows is not HTTP."""


class _Llhttp:
    """What reading requests and responses share: llhttp's callbacks turned into events, the limits
    counted as bytes arrive, and a refusal that stays."""

    _parser: httptools.HttpRequestParser | httptools.HttpResponseParser

    def __init__(self, limits: Limits | None) -> None:
        self.limits = limits or Limits()
        self.keep_alive = True
        self._events: list[Request | Response | Data | EndOfMessage] = []
        self._error: HTTPRequestError | None = None
        self._fields: list[tuple[bytes, bytes]] = []
        self._in_head = False
        """Between a message's first byte and the end of its head."""
        self._in_body = False
        self._trailers = False
        self._body_bytes = 0
        self._tunnel: bytearray | None = None
        self._closed = False
        self._begun = self._ended = 0
        """Messages begun and ended so far: what `_unfinished_head` needs to know of a read."""
        self._fed = 0
        self._heads_in_feed = 0
        self._body_in_feed = False
        self._carry = b""
        """The last bytes of the previous read: a head's blank line may straddle two reads."""

    @property
    def error(self) -> HTTPRequestError | None:
        return self._error

    @property
    def tunnel(self) -> bool:
        return self._tunnel is not None

    @property
    def trailing_data(self) -> bytes:
        return bytes(self._tunnel or b"")

    # llhttp's callbacks (httptools calls them by these names)

    def on_message_begin(self) -> None:
        self._in_head, self._fields = True, []
        self._trailers = False
        self._begun += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(self._fields) >= self.limits.max_headers:  # the bytes are counted as they arrive
            raise HTTPRequestError(431, f"more than {self.limits.max_headers} header fields")
        self._fields.append((name, value))  # normalised once the section ends

    def on_chunk_header(self) -> None:
        self._fields = []  # the last chunk's trailer fields, if any, come next

    def on_body(self, data: bytes) -> None:
        self._body_in_feed = True
        self._body_bytes += len(data)
        limit = self.limits.max_body_bytes
        if limit is not None and self._body_bytes > limit:
            raise _body_too_large(limit)
        self._events.append(Data(data))

    def on_message_complete(self) -> None:
        self._in_body = False
        self._ended += 1
        self._events.append(EndOfMessage(self._section() if self._trailers else ()))
        if not self.keep_alive:
            self._closed = True

    def on_chunk_complete(self) -> None:
        self._trailers = True

    def _head_fields(self) -> Headers:
        self._in_head = False
        self._heads_in_feed += 1
        return self._section()

    def _section(self) -> Headers:
        """The field section just read, within the limits, names lowercase, values without the
        trailing whitespace llhttp leaves (it drops the leading)."""
        fields, limits = self._fields, self.limits
        if sum(map(len, chain.from_iterable(fields))) + 4 * len(fields) > limits.max_header_bytes:
            raise _fields_too_large(limits)
        return tuple([(name.lower(), value.rstrip(b" \t")) for name, value in fields])

    def _body(self, body: Sized | Chunked) -> None:
        self._in_body, self._body_bytes = True, 0
        limit = self.limits.max_body_bytes
        if isinstance(body, Sized) and limit is not None and body.length > limit:
            raise _body_too_large(limit)

    def _feed(self, data: bytes) -> None:
        if self._tunnel is not None:
            self._tunnel += data
            return
        if self._closed:
            return
        begun, ended = self._begun, self._ended
        self._heads_in_feed, self._body_in_feed = 0, False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._upgraded(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, _Switched):
                self._upgraded(data[self._end_of_last_head(data) :])
                return
            if isinstance(cause, HTTPRequestError):
                raise cause from None
            raise HTTPRequestError(400, str(error)) from None
        except httptools.HttpParserError as error:
            if not self._closed:  # else llhttp refused bytes after the last message: ours drops them
                raise HTTPRequestError(400, _reason(error)) from None
        finally:
            self._carry = data[-3:] if len(data) >= 3 else (self._carry + data)[-3:]
        if self._in_head:
            self._unfinished_head(data, began=self._begun != begun, ended=self._ended != ended)

    def _unfinished_head(self, data: bytes, *, began: bool, ended: bool) -> None:
        """Count the bytes of a head still unfinished after `data`: httptools holds a field's bytes
        until its line ends, so a line that never ends is refused by the size the head reaches.

        Exact when the head began before `data` or at its start; when another message ended inside
        `data`, where this head began is unknown, and only its later bytes count (at most one read
        more is held)."""
        if not began:
            self._fed += len(data)
        else:
            self._fed = 0 if ended else len(data.lstrip(b"\r\n"))
        if self._fed - self._start_line_bytes() > self.limits.max_header_bytes:
            raise _fields_too_large(self.limits)

    def _end_of_last_head(self, data: bytes) -> int:
        """Where in `data` the head just read ends. llhttp does not say when a callback stops it, but a
        head holds no blank line but its last, so it is the blank line that ends the n-th head of this
        read; a body earlier in the same read could hold blank lines of its own, and is refused."""
        if self._body_in_feed:
            raise HTTPRequestError(400, "a 101 arrived in the same read as the body of an earlier response")
        seen, end = self._carry + data, -4
        for _ in range(self._heads_in_feed):
            end = seen.find(b"\r\n\r\n", end + 4)
        return end + 4 - len(self._carry)

    def _start_line_bytes(self) -> int:
        raise NotImplementedError

    def _upgraded(self, rest: bytes) -> None:
        raise NotImplementedError

    def _take(self, data: bytes) -> list[Request | Response | Data | EndOfMessage]:
        """The events `data` completed; good ones ahead of a refusal first, the refusal at the next call."""
        if self._error is not None:
            raise self._error
        try:
            if data:
                self._feed(data)
            else:
                self._end_of_input()
        except HTTPRequestError as error:
            self._error, self.keep_alive, self._closed = error, False, True
            if not self._events:
                raise
        events, self._events = self._events, []
        return events

    def _end_of_input(self) -> None:
        if self._tunnel is None and not self._closed and (self._in_head or self._in_body):
            raise HTTPRequestError(400, _MIDDLE)
        self._closed = True


class LlhttpRequestParser(_Llhttp):
    """The requests arriving on one client connection, read by llhttp (see the module's docstring)."""

    _parser: httptools.HttpRequestParser

    def __init__(self, *, limits: Limits | None = None) -> None:
        super().__init__(limits)
        self._url = b""
        self._parser = httptools.HttpRequestParser(self)
        # Versions are ours to judge; RFC 9112 §7.1.1 allows whitespace (BWS) before a chunk extension.
        self._parser.set_dangerous_leniencies(lenient_version=True, lenient_spaces_after_chunk_size=True)

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes; b"" means the client closed its side. Returns the events they completed."""
        return self._take(data)  # type: ignore[return-value]

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url = b""

    def _start_line_bytes(self) -> int:
        return len(self._url) + 16  # the method, two spaces, the version and a CRLF, give or take

    def on_url(self, part: bytes) -> None:
        self._url += part
        if len(self._url) > self.limits.max_request_line:
            raise HTTPRequestError(414, f"the request line is over {self.limits.max_request_line} bytes")

    def on_headers_complete(self) -> None:
        parser = self._parser
        major, _, minor = parser.get_http_version().partition(".")
        if major == "0":  # llhttp reads a line without a version as HTTP/0.9
            raise HTTPRequestError(
                400, "a request line is: method, target, version, separated by one space"
            )
        if major != "1":
            raise HTTPRequestError(505, "only HTTP/1.x is spoken on this connection")
        version = b"1.0" if minor == "0" else b"1.1"
        request = Request(parser.get_method(), self._url, version, self._head_fields())
        self.keep_alive, body = request_framing(request)
        if body is not None:
            self._body(body)  # a Content-Length over the limit refuses the request before it is out
        self._events.append(request)

    def _upgraded(self, rest: bytes) -> None:
        """llhttp stops after a CONNECT head (a tunnel follows) or an Upgrade request (which stays
        HTTP until a 101 answers it: parsing goes on)."""
        request = next(e for e in reversed(self._events) if isinstance(e, Request))
        if request.method == b"CONNECT":
            self._events.pop()  # llhttp ends the CONNECT message; ours has no end, the tunnel follows
            self._in_body = False
            self._tunnel = bytearray(rest)
        elif rest:
            self._feed(rest)


class LlhttpResponseParser(_Llhttp):
    """The responses arriving on one backend connection, read by llhttp (see the module's docstring).

    Call `expect(method)` before each response; a broken backend raises `HTTPResponseError`.
    """

    _parser: httptools.HttpResponseParser

    def __init__(self) -> None:
        super().__init__(None)
        self._method = b"GET"
        self._reason = b""
        self._until_close = False
        self._interim = False
        """The response read is a 1xx other than 101: its end is not a message's, the final one follows."""
        self._parser = httptools.HttpResponseParser(self)
        self._head_parser: ResponseParser | None = None
        """Ours, for a response to HEAD (llhttp would wait for the body its Content-Length announces)."""

    @property
    def idle(self) -> bool:
        if self._head_parser is not None:
            return self._head_parser.idle
        return self.keep_alive and not (self._in_head or self._in_body or self._closed or self.tunnel)

    def expect(self, method: bytes) -> None:
        self._method = method
        if self._head_parser is not None and self._head_parser.idle:
            self._head_parser = None
        if method == b"HEAD" and self.idle:
            self._head_parser = ResponseParser()
            self._head_parser.expect(method)

    def receive_data(self, data: bytes) -> list[ResponseEvent]:
        """Feed bytes; b"" means the backend closed, which ends a body that runs to the close."""
        if self._head_parser is not None:
            return self._head_parser.receive_data(data)
        if not data and not self._in_head and not self._in_body and not self._closed:
            raise HTTPResponseError("the backend closed the connection before it answered")
        try:
            return self._take(data)  # type: ignore[return-value]
        except HTTPRequestError as error:
            raise HTTPResponseError(error.detail) from None

    @property
    def trailing_data(self) -> bytes:
        return self._head_parser.trailing_data if self._head_parser is not None else super().trailing_data

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reason = b""

    def _start_line_bytes(self) -> int:
        return len(self._reason) + 15

    def on_status(self, part: bytes) -> None:
        self._reason += part

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = b"1.0" if parser.get_http_version() == "1.0" else b"1.1"
        response = Response(parser.get_status_code(), self._reason, version, self._head_fields())
        self.keep_alive, body = response_framing(response, self._method)
        self._events.append(response)
        self._until_close = body is Body.UNTIL_CLOSE
        self._interim = body is Body.INTERIM
        if body is Body.TUNNEL:
            raise _Switched
        if isinstance(body, _BODIES):
            self._body(body)
        elif self._until_close:
            self._in_body, self._body_bytes = True, 0

    def on_message_complete(self) -> None:
        if not self._interim:
            super().on_message_complete()

    def _upgraded(self, rest: bytes) -> None:
        self._in_body = False
        self._tunnel = bytearray(rest)

    def _end_of_input(self) -> None:
        if self._until_close and self._in_body:
            self._in_body = False
            self._events.append(EndOfMessage())
        super()._end_of_input()


def _body_too_large(limit: int) -> HTTPRequestError:
    return HTTPRequestError(413, f"the request body is over {limit} bytes")


def _fields_too_large(limits: Limits) -> HTTPRequestError:
    return HTTPRequestError(431, f"the header fields are over {limits.max_header_bytes} bytes")


def _reason(error: Exception) -> str:
    """llhttp's own words for what is wrong ("Invalid header value char"), without its error code."""
    return str(error).partition(": ")[2] or str(error)


def request_parser(kind: str, limits: Limits) -> RequestParser | LlhttpRequestParser:
    """A parser of one of PARSERS for the requests of one client connection."""
    return LlhttpRequestParser(limits=limits) if kind == DEFAULT_PARSER else RequestParser(limits=limits)


def response_parser(kind: str) -> ResponseParser | LlhttpResponseParser:
    """A parser of one of PARSERS for the responses of one backend connection."""
    return LlhttpResponseParser() if kind == DEFAULT_PARSER else ResponseParser()

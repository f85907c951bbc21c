"""The lab's HTTP/1.1 server connection: a client connection read through a strict parser, its
requests answered in turn by a `Handler`, each response framed for the client (`H1Downstream`), and
a refusal as problem+json.

The forward proxy, the layer 7 balancer and the sidecar (`wirelab.proxy`) differ in whom they act
for and how they reach the far end, not in how a message from an HTTP/1.1 client reaches them, so
this is written once, and any server of the lab's can serve HTTP/1.1 with it. Read deadlines (a
request head's, the idle timeout) cost a float per read: one timer per connection, moved only when it
would fire too late or early.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

from wirelab.errors import WirelabError
from wirelab.http.downstream import Handler
from wirelab.http.llhttp import DEFAULT_PARSER, LlhttpRequestParser, request_parser
from wirelab.http.problem import problem_response
from wirelab.net.acceptor import open_streams
from wirelab.net.relay import Streams
from wirelab.proto.forwarding import end_to_end, via
from wirelab.proto.http1 import (
    Data,
    EndOfMessage,
    Event,
    Headers,
    HTTPRequestError,
    Limits,
    Request,
    RequestParser,
    Response,
    keeps_alive,
    write,
)

__all__ = [
    "RECV_BYTES",
    "ClientConnection",
    "Deadline",
    "GatewayError",
    "H1Downstream",
    "Reframing",
    "answer_requests",
    "has_body",
    "persistent",
    "response_head",
    "serve_h1",
]

log = logging.getLogger(__name__)

RECV_BYTES = 64 << 10


class GatewayError(WirelabError):
    """The origin could not be reached or broke HTTP: 502, or 504 when it did not answer in time."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ClientConnection:
    """One client connection: its streams, its parser, and the events parsed but not yet handled.

    Reads are bounded by a `Deadline` (`within`, else the idle timeout). An expired deadline aborts
    the transport, and the read that was waiting raises TimeoutError.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: Limits,
        idle_timeout: float,
        parser: str = DEFAULT_PARSER,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = request_parser(parser, limits)
        self.answered = False
        self.trailers: Headers = ()
        self._idle_timeout = idle_timeout
        self._pending: deque[Event] = deque()
        self._deadline = Deadline(asyncio.get_running_loop(), self._expire)
        self.timed_out = False
        self.resumed = False
        """Whether another reader parsed part of this connection first (`resume`)."""
        self._unread = b""

    @classmethod
    async def accept(
        cls,
        sock: socket.socket,
        limits: Limits,
        idle_timeout: float,
        *,
        tls: ssl.SSLContext | None = None,
        handshake_s: float = 10.0,
        parser: str = DEFAULT_PARSER,
    ) -> ClientConnection:
        """An accepted socket as a client connection (after the TLS handshake, with `tls`), read by
        `parser` (one of `wirelab.http.llhttp.PARSERS`); the socket is closed if that fails."""
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader, writer = await open_streams(sock, limit=RECV_BYTES, tls=tls, handshake_s=handshake_s)
        except BaseException:
            sock.close()
            raise
        return cls(reader, writer, limits, idle_timeout, parser)

    def resume(self, parser: RequestParser | LlhttpRequestParser, events: Iterable[Event]) -> None:
        """Carry on from where another reader of this connection stopped: its parser, and the events
        it parsed but did not handle, which come first."""
        self.parser = parser
        self._pending.extend(events)
        self.resumed = True

    def unread(self, data: bytes) -> None:
        """Give back bytes `read` returned (the listener sniffed them for the HTTP/2 preface)."""
        self._unread = data

    async def read(self, within: float | None = None) -> bytes:
        """What the client sent next, within `within` seconds (else the idle timeout); b"" at EOF."""
        if self._unread:
            data, self._unread = self._unread, b""
            return data
        self._deadline.arm(within or self._idle_timeout)
        data = await self.reader.read(RECV_BYTES)
        self._deadline.clear()
        if self.timed_out:
            raise TimeoutError("the client sent nothing in time")
        return data

    async def next_event(self, within: float | None = None) -> Event | None:
        """The next event, reading as needed; None when the client closed between requests."""
        while not self._pending:
            if self.parser.error is not None:
                raise self.parser.error
            data = await self.read(within)
            self._pending.extend(self.parser.receive_data(data))
            if not data and not self._pending:
                return None
        return self._pending.popleft()

    async def body(self) -> AsyncIterator[bytes]:
        """The current request's body, as it arrives (the parser raises if the client stops early);
        then its trailer fields are in `trailers`."""
        while isinstance(event := await self.next_event(), Data):
            yield event.data
        self.trailers = event.trailers if isinstance(event, EndOfMessage) else ()

    async def send(self, data: bytes, *, final: bool = True) -> None:
        """Write `data`; `final` False for an interim (1xx) head, after which a refusal can still be
        answered."""
        self.answered = self.answered or final
        self.writer.write(data)
        transport = self.writer.transport
        if transport.get_write_buffer_size() or transport.is_closing():  # else drain has nothing to do
            await self.writer.drain()

    def close(self) -> None:
        self._deadline.cancel()
        self.writer.close()

    def _expire(self) -> None:
        self.timed_out = True
        self.writer.transport.abort()


class Deadline:
    """A deadline that costs a float to move: one timer, re-armed when it fires before the current
    deadline and replaced when a shorter one comes, so a read per request does not cost a timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, expire: Callable[[], None]) -> None:
        self._loop = loop
        self._expire = expire
        self._deadline = math.inf
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> None:
        """Call `expire` in `seconds` unless moved or cleared first."""
        self._deadline = self._loop.time() + seconds
        if self._timer is not None and self._timer.when() > self._deadline:
            self._timer.cancel()  # a shorter deadline than the one it waits for (a head after a body)
            self._timer = None
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._fire)

    def clear(self) -> None:
        self._deadline = math.inf

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self._deadline == math.inf:
            return
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._fire)
            return
        self._expire()


class H1Downstream:
    """A response going back on an HTTP/1.1 connection (the `Downstream` of `wirelab.http.downstream`).

    What `respond` and `send` produce is buffered and written by `flush`, so a small response goes out
    in one write; bodies are re-framed (chunked when the backend gave no length and the client speaks
    1.1; otherwise the close ends them).
    """

    def __init__(self, client: ClientConnection, request: Request, *, scheme: str) -> None:
        self.client = client
        self.request = request
        self.scheme = scheme
        self.has_body = has_body(request)
        self._out = bytearray()
        self._framing = Reframing(request)
        client.trailers = ()  # a new request: none of the last one's

    @property
    def trailers(self) -> Headers:
        return self.client.trailers

    @property
    def answered(self) -> bool:
        return self.client.answered

    def body(self) -> AsyncIterator[bytes]:
        return self.client.body()

    async def respond(self, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]]) -> None:
        if status < 200:
            if status == 100 and self.request.version == b"1.1":
                await self.client.send(write(Response(100, b"Continue", b"1.1", ())), final=False)
            return
        self._out += self._framing.head(status, reason, headers)

    async def send(self, data: bytes) -> None:
        self._out += self._framing.data(data)
        if len(self._out) >= RECV_BYTES:
            await self.flush()

    async def flush(self) -> None:
        if self._out:
            data = bytes(self._out)
            self._out.clear()
            await self.client.send(data)

    async def finish(self, trailers: Sequence[tuple[bytes, bytes]] = ()) -> bool:
        self._out += self._framing.end(trailers)
        await self.flush()
        return not self._framing.close

    async def switch(self, status_line: bytes, headers: Sequence[tuple[bytes, bytes]]) -> Streams:
        """Pass a 101 answer on whole; the connection then belongs to the upgraded protocol."""
        fields = b"".join(n + b": " + v + b"\r\n" for n, v in headers)
        await self.client.send(status_line + fields + b"%b: %b\r\n\r\n" % via(b"1.1"))
        return self.client.reader, self.client.writer


class Reframing:
    """A final response from elsewhere, framed again for the HTTP/1.1 client that asked for it: its
    head (hop-by-hop fields dropped), body chunks and end. Bodies go chunked when the far end gave no
    length and the client speaks 1.1; otherwise the close ends them (`close`)."""

    __slots__ = ("chunked", "close", "request")

    def __init__(self, request: Request) -> None:
        self.request = request
        self.chunked = False
        self.close = False

    def head(self, status: int, reason: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
        request = self.request
        head, self.chunked, self.close = response_head(
            request, status, reason, headers, keep_alive=persistent(request)
        )
        return head

    def data(self, data: bytes) -> bytes:
        return write(Data(data), chunked=self.chunked)

    def end(self, trailers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
        """Trailers go in the last chunk; a body framed by its length or the close has no room for
        them, and they are dropped, as RFC 9110 §6.5.1 allows."""
        return write(EndOfMessage(tuple(end_to_end(trailers))), chunked=self.chunked)


def response_head(
    request: Request,
    status: int,
    reason: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    *,
    keep_alive: bool,
) -> tuple[bytes, bool, bool]:
    """The head for the client, and whether its body is chunked and the connection closes after it."""
    fields = end_to_end(headers)
    has_body = request.method != b"HEAD" and status not in (204, 304)
    sized = any(name == b"content-length" for name, _ in fields)
    chunked = has_body and not sized and request.version == b"1.1"
    close = not keep_alive or (has_body and not sized and not chunked)
    if chunked:
        fields.append((b"transfer-encoding", b"chunked"))
    fields.append((b"connection", b"close" if close else b"keep-alive"))
    return write(Response(status, reason, b"1.1", tuple(fields))), chunked, close


async def answer_requests(
    client: ClientConnection,
    exchange: Callable[[Request], Awaitable[bool]],
    *,
    header_timeout: float | None = None,
) -> None:
    """Answer one client connection's requests in turn while `exchange` says it may carry another.

    Each request head must arrive within `header_timeout` (the defence against slowloris). A refused
    request (ours: HTTPRequestError; the far end's: GatewayError) is answered with a problem document
    unless its answer had begun, and ends the connection: after a refusal its framing cannot be
    trusted. A connection that fails or times out just ends.
    """
    try:
        while True:
            client.answered = False
            request = await _next_request(client, header_timeout)
            if not isinstance(request, Request) or not await exchange(request):
                break
    except (HTTPRequestError, GatewayError) as error:
        log.info("refused: %s %s", error.status, error.detail)
        if not client.answered:
            with contextlib.suppress(OSError):
                await client.send(problem_response(error.status, error.detail, headers=[via(b"1.1")]))
    except (OSError, TimeoutError) as error:
        log.debug("connection ended: %r", error)


async def serve_h1(
    client: ClientConnection, handler: Handler, peer: str, *, scheme: str, header_timeout: float
) -> None:
    """Serve a client connection's requests through `handler`, each answered by its H1Downstream."""
    await answer_requests(
        client,
        lambda request: handler(request, H1Downstream(client, request, scheme=scheme), peer),
        header_timeout=header_timeout,
    )


async def _next_request(client: ClientConnection, within: float | None) -> Event | None:
    """The next request head, past what is left of the previous request (its end, at least)."""
    while isinstance(event := await client.next_event(within), Data | EndOfMessage):
        pass
    return event


def has_body(request: Request) -> bool:
    """Whether a request's framing announces a body (a Content-Length of 0 does not)."""
    sized = request.values(b"content-length")
    return bool(request.values(b"transfer-encoding")) or sized not in ([], [b"0"])


def persistent(request: Request) -> bool:
    """RFC 9112 §9.3, from this request's own fields: the parser's flag follows the latest request
    parsed, which is a later one when the client pipelines."""
    return keeps_alive(request.version, request.tokens(b"connection"))

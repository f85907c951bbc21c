"""The lab's HTTP/1.1 client: pooled keep-alive connections to a backend, and one request's trip
through one.

Theory of operation: an `Upstream` is one TCP connection to one backend, read through asyncio streams
and a strict response parser (llhttp's by default, or ours: `wirelab.http.llhttp`). `UpstreamPool`
lends them out: an idle connection whose backend closed it while it waited is already at EOF (the
transport saw the FIN) and is discarded, so only a close racing the request itself gets through;
`Upstream.reused` tells the balancer that such a failure says nothing about the backend's health.

`exchange` forwards a request whose head the caller built: bodyless requests (the common case) run in
the caller's task; with a body, the body and the response run as two tasks at once, so both stream
(a backend may answer before it has read everything). The request body goes as it came when it has
a Content-Length and chunked otherwise; the response is handed to the `Downstream` as events, and
before each wait on the backend what is buffered goes to the client, which is what lets Server-Sent
Events through one by one. Failures of the backend raise `BackendFailed`, saying whether the client
already had a response head (after which nothing can be retried or answered).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from typing import Protocol, cast

from wirelab.http.downstream import Downstream
from wirelab.http.h1server import RECV_BYTES
from wirelab.http.llhttp import DEFAULT_PARSER, response_parser
from wirelab.net.connect import open_tcp
from wirelab.net.relay import relay_streams
from wirelab.proto.balance import Backend
from wirelab.proto.forwarding import end_to_end, forwarded_for, via
from wirelab.proto.http1 import (
    Data,
    EndOfMessage,
    HTTPResponseError,
    Request,
    Response,
    write,
)

__all__ = [
    "BackendFailed",
    "Sink",
    "Upstream",
    "UpstreamPool",
    "connect",
    "exchange",
    "probe",
    "request_head",
    "upstream_fields",
    "upstream_head",
]


class BackendFailed(Exception):
    """The backend broke the exchange: `kind` is reset, protocol or timeout; `answered` says whether the
    client already had a response head."""

    def __init__(self, kind: str, detail: str, *, answered: bool) -> None:
        super().__init__(detail)
        self.kind = kind
        self.answered = answered


class Sink(Protocol):
    """Who reads a borrowed upstream connection by callbacks instead of its stream."""

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_closed(self) -> None:
        """The backend closed its side, or the connection was lost."""


class _UpstreamProtocol(asyncio.StreamReaderProtocol):
    """A stream's protocol that can lend the connection out: while `sink` is set, what arrives goes to
    it instead of the stream, so one exchange can run without a task (the layer 7 balancer's fast
    path); the stream still sees the end of the connection, so a pool knows not to reuse it."""

    sink: Sink | None = None

    def data_received(self, data: bytes) -> None:
        if self.sink is None:
            super().data_received(data)
        else:
            self.sink.upstream_data(data)

    def eof_received(self) -> bool | None:
        keep_open = super().eof_received()
        if self.sink is not None:
            self.sink.upstream_closed()
        return keep_open

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.sink is not None:
            self.sink.upstream_closed()


class Upstream:
    """One connection to `backend`; `reused` is true when an earlier request went through it."""

    def __init__(
        self,
        backend: Backend,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        parser: str = DEFAULT_PARSER,
    ) -> None:
        self.backend = backend
        self.reader = reader
        self.writer = writer
        self.transport = cast(asyncio.Transport, writer.transport)
        self._protocol = cast(_UpstreamProtocol, writer.transport.get_protocol())
        self.parser = response_parser(parser)
        self.reused = False
        self.status = 0
        self.answered_at = 0.0
        """The status of the last response head read through it, and when it came (for the metrics)."""

    @property
    def reusable(self) -> bool:
        return self.parser.idle and not self.writer.is_closing() and not self.reader.at_eof()

    def lend(self, sink: Sink | None) -> None:
        """Send what arrives to `sink` instead of the stream; None to take the connection back."""
        self._protocol.sink = sink

    def close(self) -> None:
        self.writer.close()


class UpstreamPool:
    """Idle keep-alive connections per backend, at most `max_idle` each."""

    def __init__(
        self, *, connect_timeout_s: float, max_idle: int = 64, parser: str = DEFAULT_PARSER
    ) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.parser = parser
        self.max_idle = max_idle
        self._idle: defaultdict[str, deque[Upstream]] = defaultdict(deque)
        self.opened = 0
        """Connections opened so far: the tests and the metrics read it to see reuse."""

    async def acquire(self, backend: Backend) -> Upstream:
        """An idle live connection to `backend`, or a new one (OSError/TimeoutError if refused)."""
        upstream = self.take(backend)
        if upstream is None:
            upstream = await connect(backend, within_s=self.connect_timeout_s, parser=self.parser)
            self.opened += 1
        return upstream

    def take(self, backend: Backend) -> Upstream | None:
        """An idle live connection to `backend`, if there is one."""
        idle = self._idle.get(backend.address)
        while idle:
            upstream = idle.pop()
            if upstream.reusable:
                return upstream
            upstream.close()
        return None

    def release(self, upstream: Upstream) -> None:
        """Keep `upstream` for the next request if its exchange ended cleanly; close it otherwise."""
        idle = self._idle[upstream.backend.address]
        if not upstream.reusable or len(idle) >= self.max_idle:
            upstream.close()
            return
        upstream.reused = True
        idle.append(upstream)

    def forget(self, backend: Backend) -> None:
        """Close the idle connections to `backend` (it failed: they are likely dead too)."""
        for upstream in self._idle.pop(backend.address, ()):
            upstream.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for upstream in idle:
                upstream.close()
        self._idle.clear()


async def connect(backend: Backend, *, within_s: float, parser: str = DEFAULT_PARSER) -> Upstream:
    """A new connection to `backend`, its responses read by `parser` (one of PARSERS)."""
    sock = await open_tcp(backend.host, backend.port, within_s=within_s)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=RECV_BYTES, loop=loop)
    protocol = _UpstreamProtocol(reader, loop=loop)
    try:
        transport, _ = await loop.create_connection(lambda: protocol, sock=sock)
    except BaseException:
        sock.close()
        raise
    return Upstream(backend, reader, asyncio.StreamWriter(transport, protocol, reader, loop), parser)


def request_head(
    request: Request, target: bytes, fields: list[tuple[bytes, bytes]], *, has_body: bool
) -> bytes:
    """The request line and `fields` as HTTP/1.1 sends them; a body without a length goes chunked."""
    if has_body and not request.values(b"content-length"):
        fields.append((b"transfer-encoding", b"chunked"))
    return write(Request(request.method, target, b"1.1", tuple(fields)))


def upstream_fields(
    request: Request, peer: str, backend: Backend, scheme: str
) -> list[tuple[bytes, bytes]]:
    """The request's fields for an HTTP/1.1 backend: the forwarding rules
    (`wirelab.proto.forwarding`), a Host for HTTP/1.0 requests without one (we speak 1.1 upstream),
    and the Upgrade a WebSocket needs passed on."""
    fields, host = forwarded_for(request.headers, peer=peer, scheme=scheme, version=request.version)
    if not host:
        fields.insert(0, (b"host", backend.address.encode()))
    if b"upgrade" in request.tokens(b"connection") and (upgrade := request.values(b"upgrade")):
        fields += [(b"upgrade", upgrade[0]), (b"connection", b"upgrade")]
    return fields


def upstream_head(request: Request, peer: str, backend: Backend, scheme: str, *, has_body: bool) -> bytes:
    """The request's head as a reverse proxy sends it to an HTTP/1.1 backend (`upstream_fields`)."""
    fields = upstream_fields(request, peer, backend, scheme)
    return request_head(request, request.target, fields, has_body=has_body)


async def exchange(
    request: Request, head: bytes, upstream: Upstream, downstream: Downstream, *, idle_timeout_s: float
) -> bool:
    """Forward one request (its head already built) and relay the answer; True to keep the client."""
    upstream.parser.expect(request.method)
    upstream.writer.write(head)
    if not downstream.has_body:
        return await _response(request, upstream, downstream, idle_timeout_s)
    response = asyncio.create_task(_response(request, upstream, downstream, idle_timeout_s))
    body = asyncio.create_task(_body(request, upstream, downstream))
    try:
        done, _ = await asyncio.wait((response, body), return_when=asyncio.FIRST_EXCEPTION)
        for task in (response, body):  # the backend's error wins over the client's
            if task in done:
                task.result()
        return await response
    finally:
        response.cancel()
        body.cancel()
        await asyncio.gather(response, body, return_exceptions=True)


async def _body(request: Request, upstream: Upstream, downstream: Downstream) -> None:
    chunked = not request.values(b"content-length")
    writer = upstream.writer
    try:
        async for data in downstream.body():
            writer.write(write(Data(data), chunked=chunked))
            await writer.drain()
        trailers = tuple(end_to_end(downstream.trailers)) if chunked else ()  # a sized body has no room
        writer.write(write(EndOfMessage(trailers), chunked=chunked))
        await writer.drain()
    except OSError as error:
        raise BackendFailed(
            "reset", f"{type(error).__name__}: {error}", answered=downstream.answered
        ) from None


async def _response(
    request: Request, upstream: Upstream, downstream: Downstream, idle_timeout_s: float
) -> bool:
    while True:
        try:
            events = upstream.parser.receive_data(await upstream.reader.read(RECV_BYTES))
        except HTTPResponseError as error:
            raise BackendFailed("protocol", error.detail, answered=downstream.answered) from None
        except OSError as error:
            kind = f"{type(error).__name__}: {error}"
            raise BackendFailed("reset", kind, answered=downstream.answered) from None
        for event in events:
            if isinstance(event, Data):
                await downstream.send(event.data)
            elif isinstance(event, Response):
                upstream.status, upstream.answered_at = event.status, time.perf_counter()
                if event.status == 101:
                    return await _switch(event, upstream, downstream, idle_timeout_s)
                await downstream.respond(event.status, event.reason, [*event.headers, via(event.version)])
            else:
                return await downstream.finish(event.trailers)
        await downstream.flush()


async def _switch(
    event: Response, upstream: Upstream, downstream: Downstream, idle_timeout_s: float
) -> bool:
    """101 Switching Protocols (a WebSocket): pass the head on, then relay raw bytes both ways."""
    switch = getattr(downstream, "switch", None)
    if switch is None:
        raise BackendFailed("protocol", "a protocol switch on an HTTP/2 stream", answered=False)
    client = await switch(b"HTTP/1.1 101 %b\r\n" % (event.reason or b"Switching Protocols"), event.headers)
    if trailing := upstream.parser.trailing_data:
        client[1].write(trailing)
    await relay_streams(client, (upstream.reader, upstream.writer), idle_timeout=idle_timeout_s)
    return False


async def probe(backend: Backend, path: str, *, within_s: float) -> bool:
    """An active health check: GET `path` on a fresh connection; healthy if answered below 500 in time."""
    try:
        async with asyncio.timeout(within_s):
            upstream = await connect(backend, within_s=within_s)
            try:
                fields = ((b"host", backend.address.encode()), (b"connection", b"close"))
                upstream.writer.write(write(Request(b"GET", path.encode(), b"1.1", fields)))
                while not (events := upstream.parser.receive_data(await upstream.reader.read(RECV_BYTES))):
                    pass
            finally:
                upstream.close()
    except (OSError, TimeoutError, HTTPResponseError):
        return False
    return isinstance(events[0], Response) and events[0].status < 500

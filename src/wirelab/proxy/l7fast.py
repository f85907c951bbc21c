"""The layer 7 balancer's fast path: a cleartext HTTP/1.1 client connection served by callbacks.

Why: most of what a balancer forwards is small bodyless requests, and on the stream path each one
costs two task wake-ups, a stream buffer each way and the objects of a `Downstream`: more than the
HTTP work itself (`docs/proxies.md` has the figures). Here a request goes from the client's
`data_received` to a pooled backend connection (`Upstream.lend`), and the response from that
connection's callback to the client's transport, with no task; a task runs only while a new backend
connection is being opened.

What it takes: a bodyless request (no Transfer-Encoding, no Content-Length but 0), not asking for an
upgrade, that routes to a pool speaking HTTP/1.1, the metrics path aside. Anything else (a body, a
WebSocket, HTTP/2's preface, no route, a request the parser refuses, a backend that failed before
answering a request that may be replayed) is handed over, with what was parsed so far, to the stream
path (`wirelab.http.h1server`, `L7Balancer.handle`), which then serves the connection to its end. The
parser, the forwarding rules, the choice of backend, the breakers and the metrics are the ones the
stream path uses; only the plumbing differs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from typing import TYPE_CHECKING

from wirelab.http.h1client import Upstream, upstream_head
from wirelab.http.h1server import RECV_BYTES, ClientConnection, Deadline, Reframing, has_body
from wirelab.http.llhttp import request_parser
from wirelab.http.problem import problem_response
from wirelab.proto.balance import Backend, Pool
from wirelab.proto.forwarding import replayable, via
from wirelab.proto.http1 import (
    Data,
    Event,
    HTTPRequestError,
    HTTPResponseError,
    Request,
    Response,
)

if TYPE_CHECKING:
    from wirelab.proxy.l7 import L7Balancer

__all__ = ["H2_PREFACE", "serve_fast"]

H2_PREFACE = b"PRI * HTTP/2.0\r\n"


async def serve_fast(balancer: L7Balancer, sock: socket.socket, peer: str) -> ClientConnection | None:
    """Serve an accepted cleartext connection on the fast path; the connection as streams if it was
    handed over to the stream path, None once it has ended."""
    loop = asyncio.get_running_loop()
    front = _Front(balancer, peer, loop)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.connect_accepted_socket(lambda: front, sock)
    except BaseException:
        sock.close()
        raise
    try:
        return await front.finished
    except asyncio.CancelledError:
        front.abort()
        raise


class _Front(asyncio.Protocol):
    """One client connection: requests parsed as they arrive and forwarded one at a time (a pipelining
    client waits, its connection unread, until the answer before is out)."""

    def __init__(self, balancer: L7Balancer, peer: str, loop: asyncio.AbstractEventLoop) -> None:
        config = balancer.config
        self.balancer = balancer
        self.peer = peer
        self.loop = loop
        self.parser = request_parser(config.parser, config.limits)
        self.finished: asyncio.Future[ClientConnection | None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.exchange: _Exchange | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._pending: deque[Event] = deque()
        self._deadline = Deadline(loop, self.abort)
        self._first = True
        self._eof = False
        self._paused_reading = False
        self._paused_writing = False

    # the client's side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass of it
        self._deadline.arm(self.balancer.config.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self._first:
            self._first = False
            if data.startswith(H2_PREFACE):
                self._hand_over(data)
                return
        with contextlib.suppress(HTTPRequestError):  # the parser keeps it; the stream path answers it
            self._pending.extend(self.parser.receive_data(data))
        if self.exchange is None and self._connecting is None:
            self._deadline.arm(self.balancer.config.header_timeout_s)
            self._next()
        elif not self._paused_reading:  # a pipelining client: read no more until this one is answered
            self._paused_reading = True
            self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self._eof = True
        if self.exchange is None and self._connecting is None and not self._pending:
            self._close()
        return True  # the answer in progress, if any, still goes out

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        if self.exchange is not None:
            self.exchange.abandon()
        if self._connecting is not None:
            self._connecting.cancel()
        if not self.finished.done():
            self.finished.set_result(None)

    def pause_writing(self) -> None:
        self._paused_writing = True
        if self.exchange is not None:
            self.exchange.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused_writing = False
        if self.exchange is not None:
            self.exchange.upstream.transport.resume_reading()

    def abort(self) -> None:
        """Cut the connection (its head came too late, or the balancer is closing)."""
        if self.transport is not None:
            self.transport.abort()

    # requests, one at a time

    def _next(self) -> None:
        """Forward the next request parsed, or hand the connection over if this path cannot."""
        pending = self._pending
        while pending and not isinstance(pending[0], Request):
            pending.popleft()  # the end of a bodyless request already forwarded
        if not pending:
            if self.parser.error is not None:
                self._hand_over()
            elif self._eof:
                self._close()
            return
        request = pending[0]
        assert isinstance(request, Request)
        balancer = self.balancer
        name = None if _special(request, balancer) else balancer.route(request)
        if name is None or balancer.draining or balancer.pool_configs[name].protocol != "http/1.1":
            self._hand_over()
            return
        pending.popleft()
        pool = balancer.pools[name]
        backend = balancer.pick(pool, balancer.key(request, self.peer, name))
        if backend is None:
            pending.appendleft(request)
            self._hand_over()  # it answers 503, or waits for a backend as its rules say
            return
        self._deadline.clear()
        balancer.started()
        upstream = balancer.upstreams.take(backend)
        if upstream is None:
            self._connecting = self.loop.create_task(self._connect(request, pool, backend))
        else:
            self._send(request, pool, upstream)

    async def _connect(self, request: Request, pool: Pool, backend: Backend) -> None:
        balancer = self.balancer
        try:
            upstream = await balancer.upstreams.acquire(backend)
        except (OSError, TimeoutError) as error:
            balancer.failed(pool, backend, "connect", str(error) or "timed out", eject=True)
            balancer.ended()
            self._connecting = None
            self._retry(request)  # it never left: another backend may have it
            return
        except asyncio.CancelledError:
            balancer.breakers[backend.address].release()
            balancer.ended()
            raise
        self._connecting = None
        if self.transport is None or self.transport.is_closing():
            balancer.upstreams.release(upstream)
            balancer.breakers[backend.address].release()
            balancer.ended()
            return
        self._send(request, pool, upstream)

    def _send(self, request: Request, pool: Pool, upstream: Upstream) -> None:
        self.exchange = _Exchange(self, request, pool, upstream)
        if self._paused_writing:
            upstream.transport.pause_reading()

    def done(self, keep: bool) -> None:
        """The exchange ended with the response out: on to the next request, or close."""
        self.exchange = None
        self.balancer.ended()
        if not keep or self.balancer.draining:
            self._close()
            return
        if self._paused_reading:
            self._paused_reading = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        self._deadline.arm(self.balancer.config.header_timeout_s)
        self._next()

    def failed(self, request: Request, answered: bool, detail: str) -> None:
        """The backend failed the exchange (the balancer has been told)."""
        self.exchange = None
        self.balancer.ended()
        if answered:
            self.abort()  # all the client can be told: its response is cut short
        elif replayable(request, has_body=False):
            self._retry(request)
        else:
            self.transport.write(problem_response(502, detail, headers=[via(b"1.1")]))  # type: ignore[union-attr]
            self._close()

    def _retry(self, request: Request) -> None:
        """Give a request that may be sent again to the stream path, which tries the other backends."""
        self.balancer.metrics.retries += 1
        self._pending.appendleft(request)
        self._hand_over()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _hand_over(self, data: bytes = b"") -> None:
        """The connection goes on as streams: with the parser and the events not forwarded yet, or
        with `data`, the first bytes, not parsed at all."""
        self._deadline.cancel()
        transport, loop, config = self.transport, self.loop, self.balancer.config
        assert transport is not None
        reader = asyncio.StreamReader(limit=RECV_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused_writing:
            protocol.pause_writing()
        if self._paused_reading:
            transport.resume_reading()
        if self._eof:
            reader.feed_eof()
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        client = ClientConnection(reader, writer, config.limits, config.idle_timeout_s, config.parser)
        if data:
            client.unread(data)
        else:
            client.resume(self.parser, self._pending)
        self.finished.set_result(client)


class _Exchange:
    """One request sent on a borrowed backend connection; its response, read by that connection's
    parser, goes to the client as it comes."""

    __slots__ = (
        "answered",
        "backend",
        "framing",
        "front",
        "head_s",
        "pool",
        "request",
        "started",
        "status",
        "upstream",
    )

    def __init__(self, front: _Front, request: Request, pool: Pool, upstream: Upstream) -> None:
        self.front = front
        self.request = request
        self.pool = pool
        self.upstream = upstream
        self.backend = upstream.backend
        self.framing = Reframing(request)
        self.answered = False
        self.status = 0
        self.head_s = 0.0
        """The response head's status, and the seconds it took: the metrics and the breaker have them
        when the exchange ends well (a response cut short is a failure instead)."""
        self.started = time.perf_counter()
        pool.opened(self.backend)
        upstream.parser.expect(request.method)
        upstream.lend(self)
        upstream.transport.write(upstream_head(request, front.peer, self.backend, "http", has_body=False))

    def upstream_data(self, data: bytes) -> None:
        try:
            events = self.upstream.parser.receive_data(data)
        except HTTPResponseError as error:
            self._fail("protocol", error.detail)
            return
        framing, out = self.framing, []
        for event in events:
            if isinstance(event, Data):
                out.append(framing.data(event.data))
            elif isinstance(event, Response):
                if event.status == 101:
                    self._fail("protocol", "a protocol switch nobody asked for")
                    return
                if event.status >= 200:  # an interim answer has nothing to say to a bodyless request
                    out.append(self._head(event))
            else:
                out.append(framing.end(event.trailers))
                self._end()
                self.front.balancer.answered(self.backend, self.status, self.head_s)
                self.front.transport.write(b"".join(out))  # type: ignore[union-attr]
                self.front.done(keep=not framing.close)
                return
        if out:
            self.front.transport.write(b"".join(out))  # type: ignore[union-attr]

    def _head(self, response: Response) -> bytes:
        self.answered, self.status = True, response.status
        self.head_s = time.perf_counter() - self.started
        return self.framing.head(
            response.status, response.reason, [*response.headers, via(response.version)]
        )

    def upstream_closed(self) -> None:
        self.upstream_data(b"")  # the end of a body that runs to the close, or a failure

    def abandon(self) -> None:
        """The client went away: the backend connection, mid-answer, cannot be reused, and the
        breaker has no verdict on it (the head's status counts only once the answer is whole)."""
        self.upstream.close()
        self._end()
        self.front.balancer.breakers[self.backend.address].release()
        self.front.balancer.ended()

    def _end(self) -> None:
        upstream = self.upstream
        upstream.lend(None)
        self.pool.closed(self.backend)
        self.front.balancer.upstreams.release(upstream)  # closed unless it is ready for another

    def _fail(self, kind: str, detail: str) -> None:
        upstream, balancer = self.upstream, self.front.balancer
        upstream.close()
        self._end()
        # A reused connection may just have been closed by the backend: no sign of its health.
        fresh = not upstream.reused
        balancer.failed(self.pool, self.backend, kind, detail, eject=fresh, verdict=fresh)
        self.front.failed(self.request, self.answered, f"backend {self.backend.address} failed: {detail}")


def _special(request: Request, balancer: L7Balancer) -> bool:
    """Whether the request is not for this path: it has a body, asks for an upgrade, or is for the
    metrics."""
    return (
        has_body(request)
        or b"upgrade" in request.tokens(b"connection")
        or request.target.partition(b"?")[0] == balancer.metrics_path
    )

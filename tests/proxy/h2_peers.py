"""Peers for the HTTP/2 front's tests: a stub handler, a small server around `serve_h2`, a bare client.

Theory of operation: the stub plays the balancer's forwarding logic, choosing by path how its
"backend" behaves (echo what it saw, a big body, Server-Sent Events, failures, a hang, a slow reader)
and recording what only the server side can see (cancellations, how many handlers ran at once, when
each event was produced). The server accepts on 127.0.0.1 like the plain listener would (it reads the
24-byte preface itself and hands it over) or over TLS, and on leaving checks that no task or socket
outlived it. The bare client, on the h2 library, does what curl cannot do on cue: reset a stream,
stall an upload, send a malformed request, watch for GOAWAY.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, Event, WindowUpdated
from h2.exceptions import StreamClosedError

from wirelab.http.downstream import Downstream
from wirelab.http.h1server import GatewayError
from wirelab.http.h2server import serve_h2
from wirelab.proto.http1 import Limits, Request

BIG = 16 << 20
PIECE = bytes(range(256)) * 256  # 64 KiB
BIG_SHA256 = hashlib.sha256(PIECE * (BIG // len(PIECE))).hexdigest()
SSE_EVENTS = 5
SSE_GAP_S = 0.2
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

E = TypeVar("E", bound=Event)
Route = Callable[[Request, Downstream, str], Awaitable[None]]


class Stub:
    """The handler `serve_h2` runs per stream; the path picks the behaviour."""

    def __init__(self) -> None:
        self.active = 0
        self.most_active = 0
        self.cancelled: list[bytes] = []
        self.cancelled_one = asyncio.Event()
        self.produced: list[float] = []
        """When each Server-Sent Event was handed to the downstream (time.monotonic)."""
        self.release = asyncio.Event()
        """Lets /slow read the rest of its body."""
        self.taken = 0
        """Body bytes /slow has read so far."""
        self.routes: dict[bytes, Route] = {
            b"/big": self.big,
            b"/sse": self.sse,
            b"/fail-before": self.fail_before,
            b"/fail-after": self.fail_after,
            b"/hang": self.hang,
            b"/slow": self.slow,
        }

    async def __call__(self, request: Request, downstream: Downstream, peer: str) -> bool:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            route = self.routes.get(request.target.partition(b"?")[0], self.echo)
            await route(request, downstream, peer)
            return await downstream.finish()
        except asyncio.CancelledError:
            self.cancelled.append(request.target)
            self.cancelled_one.set()
            raise
        finally:
            self.active -= 1

    async def echo(self, request: Request, downstream: Downstream, peer: str) -> None:
        """What it saw, as JSON, with hop-by-hop fields and an uppercase name the front must fix."""
        has_body = downstream.has_body
        digest, size = hashlib.sha256(), 0
        async for data in downstream.body():
            digest.update(data)
            size += len(data)
        seen = {
            "method": request.method.decode(),
            "target": request.target.decode(),
            "version": request.version.decode(),
            "headers": [[name.decode(), value.decode()] for name, value in request.headers],
            "body_sha256": digest.hexdigest(),
            "body_size": size,
            "scheme": downstream.scheme,
            "has_body": has_body,
            "peer": peer,
        }
        body = json.dumps(seen).encode()
        fields = [
            (b"Content-Type", b"application/json"),
            (b"Content-Length", b"%d" % len(body)),
            (b"Connection", b"keep-alive, X-Hop"),
            (b"Keep-Alive", b"timeout=5"),
            (b"X-Hop", b"dropped"),
            (b"X-Upper", b"kept"),
        ]
        await downstream.respond(200, b"OK", fields)
        await downstream.send(body)

    async def big(self, request: Request, downstream: Downstream, peer: str) -> None:
        await downstream.respond(200, b"OK", [(b"content-length", b"%d" % BIG)])
        for _ in range(BIG // len(PIECE)):
            await downstream.send(PIECE)

    async def sse(self, request: Request, downstream: Downstream, peer: str) -> None:
        await downstream.respond(200, b"OK", [(b"content-type", b"text/event-stream")])
        for number in range(SSE_EVENTS):
            if number:
                await asyncio.sleep(SSE_GAP_S)
            self.produced.append(time.monotonic())
            await downstream.send(b"data: %d\n\n" % number)
            await downstream.flush()

    async def fail_before(self, request: Request, downstream: Downstream, peer: str) -> None:
        raise GatewayError(502, "the backend refused the connection")

    async def fail_after(self, request: Request, downstream: Downstream, peer: str) -> None:
        await downstream.respond(200, b"OK", [(b"content-type", b"text/plain")])
        await downstream.send(b"partial")
        await downstream.flush()
        raise GatewayError(502, "the backend reset the connection mid-response")

    async def hang(self, request: Request, downstream: Downstream, peer: str) -> None:
        """Answers a first piece, then waits for what never comes: only cancellation ends it."""
        await downstream.respond(200, b"OK", [(b"content-type", b"text/plain")])
        await downstream.send(b"first")
        await downstream.flush()
        await asyncio.Event().wait()

    async def slow(self, request: Request, downstream: Downstream, peer: str) -> None:
        """A backend that reads one chunk, stalls until released, then reads the rest."""
        digest = hashlib.sha256()
        async for data in downstream.body():
            digest.update(data)
            self.taken += len(data)
            await self.release.wait()
        body = digest.hexdigest().encode()
        await downstream.respond(200, b"OK", [(b"content-length", b"%d" % len(body))])
        await downstream.send(body)


class H2Server:
    """`serve_h2` on 127.0.0.1 for each connection, plain (prior knowledge) or over TLS."""

    def __init__(self, handler: Stub, *, tls: ssl.SSLContext | None, limits: Limits, idle_s: float) -> None:
        self.handler = handler
        self.tls = tls
        self.limits = limits
        self.idle_s = idle_s
        self.port = 0
        self.connections: set[asyncio.Task[None]] = set()
        self.callbacks: set[asyncio.Task[Any]] = set()
        self.writers: list[asyncio.StreamWriter] = []
        self.alpn: list[str | None] = []

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve in a task of our own: cancelling asyncio's own callback task logs an error (3.11)."""
        callback = asyncio.current_task()
        assert callback is not None
        self.callbacks.add(callback)
        task = asyncio.create_task(self.serve(reader, writer))
        self.connections.add(task)
        self.writers.append(writer)
        await asyncio.wait({task})

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received = b""
            if self.tls is None:
                received = await reader.readexactly(len(PREFACE))
                assert received == PREFACE
            else:
                self.alpn.append(writer.get_extra_info("ssl_object").selected_alpn_protocol())
            host, port = writer.get_extra_info("peername")
            peer = f"{host}:{port}"
            scheme = "http" if self.tls is None else "https"
            await serve_h2(
                reader, writer, self.handler, peer,
                scheme=scheme, limits=self.limits, idle_timeout_s=self.idle_s, received=received,
            )  # fmt: skip
        except asyncio.IncompleteReadError:
            writer.close()


@asynccontextmanager
async def h2_server(
    handler: Stub, *, tls: ssl.SSLContext | None = None, limits: Limits | None = None, idle_s: float = 30
) -> AsyncIterator[H2Server]:
    """The server for one test; leaving it asserts that no task or socket outlived the connections."""
    front = H2Server(handler, tls=tls, limits=limits or Limits(), idle_s=idle_s)
    server = await asyncio.start_server(front.accept, "127.0.0.1", 0, ssl=tls)
    front.port = server.sockets[0].getsockname()[1]
    try:
        yield front
    finally:
        server.close()
        for task in front.connections:
            task.cancel()
        await asyncio.gather(*front.connections, *front.callbacks, return_exceptions=True)
        await server.wait_closed()
        assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()
        assert all(writer.transport.is_closing() for writer in front.writers)


class H2Client:
    """A bare HTTP/2 client over one connection; events are read on demand, DATA acknowledged."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, h2: H2Connection
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.h2 = h2
        self.events: deque[Event] = deque()
        self.bodies: dict[int, bytearray] = {}

    def request(
        self, path: bytes, *, method: bytes = b"GET", fields: list[tuple[bytes, bytes]] | None = None,
        end_stream: bool = True,
    ) -> int:  # fmt: skip
        stream_id = self.h2.get_next_available_stream_id()
        pseudo = [
            (b":method", method),
            (b":scheme", b"http"),
            (b":authority", b"localhost"),
            (b":path", path),
        ]
        self.h2.send_headers(stream_id, pseudo + (fields or []), end_stream=end_stream)
        return stream_id

    async def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())
        await self.writer.drain()

    async def next(self, kind: type[E], stream_id: int | None = None, *, within_s: float = 10) -> E:
        """The first event of `kind` (on `stream_id` if given) not taken yet, reading as needed."""
        async with asyncio.timeout(within_s):
            while True:
                for event in self.events:
                    if isinstance(event, kind) and stream_id in (None, getattr(event, "stream_id", None)):
                        self.events.remove(event)
                        return event
                data = await self.reader.read(1 << 16)
                if not data:
                    raise ConnectionResetError("the server closed the connection")
                for event in self.h2.receive_data(data):
                    if isinstance(event, DataReceived):
                        self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                        self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                    self.events.append(event)
                await self.flush()

    async def send_body(self, stream_id: int, body: bytes, *, stall_s: float = 10) -> int:
        """Send `body`, ending the stream, as the server's windows allow. Returns how much went: less
        when the server gave no window for `stall_s` or closed the stream."""
        sent = 0
        with contextlib.suppress(StreamClosedError):
            while sent < len(body):
                window = min(self.h2.local_flow_control_window(stream_id), self.h2.max_outbound_frame_size)
                if not window:
                    try:
                        await self.next(WindowUpdated, within_s=stall_s)
                    except TimeoutError:
                        break
                    continue
                piece = body[sent : sent + window]
                sent += len(piece)
                self.h2.send_data(stream_id, piece, end_stream=sent == len(body))
                await self.flush()
        return sent

    async def closed_by_server(self) -> bool:
        """Whether the server closes the connection within a few seconds (all that comes is read)."""
        async with asyncio.timeout(5):
            while data := await self.reader.read(1 << 16):
                self.events.extend(self.h2.receive_data(data))
        return True


@asynccontextmanager
async def h2_client(port: int, *, validate: bool = True) -> AsyncIterator[H2Client]:
    """A connection to 127.0.0.1:`port`; `validate=False` lets it send malformed requests."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    config = H2Configuration(
        header_encoding=None, validate_outbound_headers=validate, normalize_outbound_headers=validate
    )
    client = H2Client(reader, writer, H2Connection(config))
    try:
        client.h2.initiate_connection()
        await client.flush()
        yield client
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

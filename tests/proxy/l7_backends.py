"""Real HTTP/1.1 backends on loopback for the layer 7 balancer's tests, and the balancer around them.

Theory of operation: each backend is an asyncio server speaking HTTP/1.1 through h11 that reports in
its answers what it saw (its name, its connection number, the forwarding fields), streams big bodies
in pieces, and can be stopped mid-test, closing its keep-alive connections, to play a dead backend.
The path picks the behaviour: /download streams 16 MiB, /events sends Server-Sent Events
`SSE_GAP_S` apart, /slow answers after `SLOW_S`, /trailers answers chunked with `TRAILERS` after
the body (request trailers are reported as `x-seen-trailer-NAME`), and any other path answers the
backend's name (a POST: the SHA-256 of its body) with the backend's `status`, which a test may
change to play a failing backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import h11

from wirelab.proxy.l7 import L7Balancer
from wirelab.proxy.l7config import L7Config, l7_overrides, load_l7_config

__all__ = [
    "BIG",
    "BIG_SHA256",
    "PIECE",
    "SLOW_S",
    "SSE_GAP_S",
    "TRAILERS",
    "Backend",
    "balancer",
    "l7_config",
    "running",
    "serving",
    "url",
]

BIG = 16 << 20
PIECE = bytes(range(256)) * 256  # 64 KiB
BIG_SHA256 = hashlib.sha256(PIECE * (BIG // len(PIECE))).hexdigest()
SSE_GAP_S = 0.3
SLOW_S = 1.0
TRAILERS = [("grpc-status", "0"), ("grpc-message", "all good")]


class Backend:
    """An h11 server on 127.0.0.1; `stop` closes the listener and every open connection."""

    def __init__(self, name: str, *, slam: bool = False) -> None:
        self.name = name
        self.slam = slam
        """Reset every connection as soon as a request head arrives, answering nothing."""
        self.status = 200
        """The status of the plain answers (not /download, /events or /slow)."""
        self.requests = 0
        """Request heads received, on every connection."""
        self.ids = itertools.count(1)
        self.writers: set[asyncio.StreamWriter] = set()
        self.handlers: set[asyncio.Task[Any]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in self.writers:
                writer.transport.abort()
            await asyncio.gather(*self.handlers)  # the aborts end them: none outlives the test
            await self.server.wait_closed()
            self.server = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn, number = h11.Connection(h11.SERVER), next(self.ids)
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        self.writers.add(writer)
        try:
            while isinstance(request := await _next(conn, reader), h11.Request):
                self.requests += 1
                if self.slam:
                    writer.transport.abort()
                    return
                digest, size = hashlib.sha256(), 0
                while isinstance(event := await _next(conn, reader), h11.Data):
                    digest.update(event.data)
                    size += len(event.data)
                seen = {name.decode(): value.decode() for name, value in request.headers}
                if isinstance(event, h11.EndOfMessage):
                    seen.update(
                        (f"trailer-{name.decode()}", value.decode()) for name, value in event.headers
                    )
                await self.respond(conn, writer, request, number, seen, digest.hexdigest())
                if conn.our_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            pass
        finally:
            self.handlers.discard(task)
            self.writers.discard(writer)
            writer.close()

    async def respond(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        number: int,
        seen: dict[str, str],
        digest: str,
    ) -> None:
        path = request.target.decode()
        send: Callable[[h11.Event], None] = lambda event: writer.write(conn.send(event) or b"")  # noqa: E731
        headers = [
            ("x-backend", self.name),
            ("x-connection", str(number)),
            *((f"x-seen-{name}", value) for name, value in seen.items() if name != "content-length"),
        ]
        status = self.status
        if path == "/download":
            send(h11.Response(status_code=200, headers=headers))
            for _ in range(BIG // len(PIECE)):
                send(h11.Data(data=PIECE))
                await writer.drain()
        elif path == "/events":
            send(h11.Response(status_code=200, headers=[*headers, ("content-type", "text/event-stream")]))
            for index in range(3):
                send(h11.Data(data=f"id: {index}\ndata: event {index}\n\n".encode()))
                await writer.drain()
                await asyncio.sleep(SSE_GAP_S)
        elif path == "/trailers":
            send(h11.Response(status_code=200, headers=headers))  # no length: chunked, with room for them
            send(h11.Data(data=b"body before the trailers"))
            send(h11.EndOfMessage(headers=TRAILERS))
            await writer.drain()
            return
        else:
            if path == "/slow":
                await asyncio.sleep(SLOW_S)
                status = 200
            body = digest.encode() if request.method == b"POST" else self.name.encode()
            send(h11.Response(status_code=status, headers=[*headers, ("content-length", str(len(body)))]))
            send(h11.Data(data=body))
        send(h11.EndOfMessage())
        await writer.drain()


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> object:
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(1 << 16))
    return event


@asynccontextmanager
async def running(*names: str) -> AsyncIterator[list[Backend]]:
    async with AsyncExitStack() as stack:
        found = []
        for name in names:
            backend = await Backend(name).start()
            stack.push_async_callback(backend.stop)
            found.append(backend)
        yield found


@asynccontextmanager
async def serving(config: L7Config) -> AsyncIterator[L7Balancer]:
    """A started balancer for `config`, closed on leaving."""
    lb = L7Balancer(config)
    await lb.start()
    try:
        yield lb
    finally:
        await lb.close()


@asynccontextmanager
async def balancer(
    *backends: Backend,
    algorithm: str = "round-robin",
    weights: tuple[int, ...] = (),
    header_timeout_s: float = 10.0,
    parser: str = "llhttp",
) -> AsyncIterator[L7Balancer]:
    flags = [
        f"127.0.0.1:{b.port}" + (f",weight={weights[i]}" if weights else "") for i, b in enumerate(backends)
    ]
    config = l7_config(
        flags, algorithm=algorithm, connect_timeout=1.0, header_timeout=header_timeout_s, parser=parser
    )
    async with serving(config) as lb:
        yield lb


def l7_config(backends: list[str], **flags: Any) -> L7Config:
    """The configuration `wirelab lb l7 --listen 127.0.0.1:0 --backend ... --FLAG ...` makes."""
    return load_l7_config(None, l7_overrides({"listen": "127.0.0.1:0", "backends": backends, **flags}))


def url(lb: L7Balancer, path: str = "/") -> str:
    return f"http://127.0.0.1:{lb.address[1]}{path}"

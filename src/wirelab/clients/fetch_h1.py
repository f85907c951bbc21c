"""`wirelab fetch` over HTTP/1.0 and HTTP/1.1: our own parser and writer (`wirelab.proto.http1`) on
asyncio streams, in clear or over TLS.

Theory of operation: an `H1Connection` carries one request at a time (keep-alive) or writes a list of
requests at once and reads their responses after (pipelining, RFC 9112 §9.3.2: the responses come
back in the order of the requests, the only way a client can tell which is which). HTTP/1.0 asks
for no keep-alive, so the server closes after each response: the connection waits for that close to
show it. `H1Session` is the browser's side: the page's HTML on the first connection, then its
resources over a pool of up to `connections` keep-alive connections, each taking the next resource
when it is free, or with pipelining each connection's share written at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections import deque

from wirelab.clients.wire import (
    RECV_BYTES,
    REQUEST_FIELDS,
    Body,
    ConnectionStats,
    Dialed,
    Dialer,
    Exchange,
    FetchError,
    Recorder,
    Target,
    gather_or_cancel,
    text_fields,
)
from wirelab.proto.http1 import (
    Data,
    EndOfMessage,
    HTTPResponseError,
    Request,
    Response,
    ResponseParser,
    write,
)

__all__ = ["H1Connection", "H1Session"]

CLOSE_WAIT_S = 2.0
"""How long a connection whose response said it would not persist waits to see the server close it."""


class H1Connection:
    """One HTTP/1.x connection (`version` b"1.0" or b"1.1") to `target`."""

    def __init__(
        self,
        target: Target,
        version: bytes,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        dialed: Dialed,
        recorder: Recorder,
    ) -> None:
        self.target = target
        self.version = version
        self.dialed = dialed
        self.requests = 0
        self.closed_by_server = False
        self._reader = reader
        self._writer = writer
        self._recorder = recorder
        self._parser = ResponseParser()
        self._pending: deque[Response | Data | EndOfMessage] = deque()

    @classmethod
    async def open(cls, dialer: Dialer, version: bytes, number: int) -> H1Connection:
        reader, writer, dialed = await dialer.dial(number)
        return cls(dialer.target, version, reader, writer, dialed, dialer.recorder)

    @property
    def reusable(self) -> bool:
        return (
            self._parser.idle
            and not self._pending
            and not self.closed_by_server
            and not self._writer.is_closing()
        )

    async def get(self, path: str, *, keep: bool = False) -> Exchange:
        """GET `path` and read its response whole."""
        started = self._send([path])
        return await self._receive(path, started, keep=keep)

    async def pipeline(self, paths: list[str]) -> list[Exchange]:
        """Write a GET for every path at once, then read the responses, which come in that order."""
        started = self._send(paths)
        exchanges: list[Exchange] = []
        for path in paths:
            try:
                exchanges.append(await self._receive(path, started))
            except FetchError:
                if not self.closed_by_server:
                    raise
                raise FetchError(
                    f"the server closed connection #{self.dialed.number} after {len(exchanges)} of "
                    f"{len(paths)} pipelined responses"
                ) from None
        return exchanges

    def _send(self, paths: list[str]) -> float:
        heads = [self._head(path) for path in paths]
        for head in heads:
            self._recorder.trace(self.dialed.number, "send", head.decode("latin-1").rstrip("\r\n"))
        self._writer.write(b"".join(heads))
        self.requests += len(paths)
        return self._recorder.ms()

    def _head(self, path: str) -> bytes:
        fields = (
            (b"host", self.target.authority.encode()),
            *REQUEST_FIELDS,
        )
        return write(Request(b"GET", path.encode(), self.version, fields))

    async def _receive(self, path: str, started: float, *, keep: bool = False) -> Exchange:
        """The next response on the connection (interim 1xx ones shown and skipped), read whole."""
        number = self.dialed.number
        self._parser.expect(b"GET")
        head: Response | None = None
        first_byte = 0.0
        body = Body(keep=keep)
        while not isinstance(event := await self._next_event(), EndOfMessage) or head is None:
            if isinstance(event, Response):
                self._recorder.trace(number, "recv", write(event).decode("latin-1").rstrip("\r\n"))
                if event.status >= 200:
                    head, first_byte = event, self._recorder.ms()
            elif isinstance(event, Data):
                body.add(event.data)
        done = self._recorder.ms()
        self._recorder.trace(number, "note", f"{path}: {body.size:,} body bytes")
        if not self._parser.keep_alive and not self._pending:
            await self._wait_close()
        fields = text_fields(head.headers)
        return Exchange(
            path, head.status, fields, body.size, body.sha256, number, started, first_byte, done, body.data
        )

    async def _next_event(self) -> Response | Data | EndOfMessage:
        """The next event of the responses on this connection; one read may bring several responses."""
        while not self._pending:
            self._pending.extend(self._events(await self._read()))
        return self._pending.popleft()

    async def _read(self) -> bytes:
        try:
            data = await self._reader.read(RECV_BYTES)
        except OSError as error:
            raise FetchError(f"connection #{self.dialed.number} failed: {error}") from None
        if not data:
            self._closed_by_server()
        return data

    def _events(self, data: bytes) -> list[Response | Data | EndOfMessage]:
        try:
            return self._parser.receive_data(data)
        except HTTPResponseError as error:
            raise FetchError(f"{self.target.authority} broke HTTP/1.1: {error.detail}") from None

    def _closed_by_server(self) -> None:
        if not self.closed_by_server:
            self.closed_by_server = True
            self._recorder.trace(self.dialed.number, "note", "the server closed the connection")

    async def _wait_close(self) -> None:
        """The response said the connection ends with it: see the server close it (HTTP/1.0's way)."""
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(CLOSE_WAIT_S):
                while await self._reader.read(RECV_BYTES):
                    pass
                self._closed_by_server()

    async def close(self) -> ConnectionStats:
        """Close the connection; its figures."""
        protocol = "HTTP/1.0" if self.version == b"1.0" else "HTTP/1.1"
        stats = self.dialed.stats(protocol, self.requests, closed_by_server=self.closed_by_server)
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await self._writer.wait_closed()
        return stats


class H1Session:
    """A browser's HTTP/1.x connections to one origin: up to `connections` at once, kept alive and
    reused (HTTP/1.1), or one per request (HTTP/1.0, whose server closes); `pipeline` writes each
    connection's requests at once."""

    def __init__(self, dialer: Dialer, *, version: bytes, connections: int, pipeline: bool) -> None:
        self.dialer = dialer
        self.version = version
        self.connections = connections
        self.pipeline = pipeline
        self._idle: list[H1Connection] = []
        self._open: list[H1Connection] = []
        self._opened = 0
        self._stats: list[ConnectionStats] = []

    async def _connection(self) -> H1Connection:
        while self._idle:
            connection = self._idle.pop()
            if connection.reusable:
                return connection
            await self._close(connection)
        self._opened += 1  # numbered before the await: connections open side by side
        connection = await H1Connection.open(self.dialer, self.version, self._opened)
        self._open.append(connection)
        return connection

    async def _release(self, connection: H1Connection) -> None:
        if connection.reusable:
            self._idle.append(connection)
        else:
            await self._close(connection)

    async def _close(self, connection: H1Connection) -> None:
        self._open.remove(connection)
        self._stats.append(await connection.close())

    async def get(self, path: str, *, keep: bool = False) -> Exchange:
        connection = await self._connection()
        exchange = await connection.get(path, keep=keep)
        await self._release(connection)
        return exchange

    async def get_all(self, paths: list[str]) -> list[Exchange]:
        """Every path, over up to `connections` connections at once; the exchanges in `paths`' order."""
        results: dict[int, Exchange] = {}
        width = min(self.connections, len(paths))
        if self.pipeline:
            shares = [list(range(len(paths)))[first::width] for first in range(width)]
            await gather_or_cancel(self._pipelined(paths, share, results) for share in shares)
        else:
            queue = list(enumerate(paths))
            queue.reverse()
            await gather_or_cancel(self._worker(queue, results) for _ in range(width))
        return [results[index] for index in range(len(paths))]

    async def _worker(self, queue: list[tuple[int, str]], results: dict[int, Exchange]) -> None:
        """A browser's connection slot: the next path waiting, until none is left."""
        while queue:
            index, path = queue.pop()
            results[index] = await self.get(path)

    async def _pipelined(self, paths: list[str], share: list[int], results: dict[int, Exchange]) -> None:
        connection = await self._connection()
        exchanges = await connection.pipeline([paths[index] for index in share])
        results.update(zip(share, exchanges, strict=True))
        await self._release(connection)

    async def aclose(self) -> list[ConnectionStats]:
        """Close every connection still open; the figures of all of them, in the order they opened."""
        self._idle.clear()
        for connection in list(self._open):
            await self._close(connection)
        return sorted(self._stats, key=lambda stats: stats.number)

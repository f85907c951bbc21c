"""A counting TCP relay: clients connect to it, it connects to the server, and it counts every byte.

Theory of operation: a transport's cost on the wire is whatever its client and server actually send,
headers, chunk sizes, WebSocket framing and keep-alive reuse included, and estimating that from
payload sizes would hide exactly what the bench is meant to show. So the clients under test talk to
this relay instead of the server. Each accepted connection gets its own upstream connection and two
pumps (client to server is "up", server to client is "down") that count what they forward; an
end-of-file is passed on as a half-close, so HTTP semantics are untouched. `statistics()` gives the
running totals; a scenario subtracts two of them to get one run's figures.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from types import TracebackType

__all__ = ["CountingRelay", "RelayStats"]

CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class RelayStats:
    connections: int = 0
    bytes_up: int = 0
    bytes_down: int = 0

    def __sub__(self, other: RelayStats) -> RelayStats:
        return RelayStats(
            self.connections - other.connections,
            self.bytes_up - other.bytes_up,
            self.bytes_down - other.bytes_down,
        )


class CountingRelay:
    """Listens on a free loopback port and relays to `upstream_port`; use `async with`."""

    def __init__(self, upstream_port: int, *, host: str = "127.0.0.1") -> None:
        self._host = host
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._connections = 0
        self._up = 0
        self._down = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def statistics(self) -> RelayStats:
        return RelayStats(self._connections, self._up, self._down)

    async def wait_idle(self, seconds: float = 5.0) -> None:
        """Wait (at most `seconds`) until every relayed connection has closed, so the counts are final."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._sessions:
                    await asyncio.wait(set(self._sessions))

    async def __aenter__(self) -> CountingRelay:
        self._server = await asyncio.start_server(self._session, self._host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # the pumps see end-of-file and their sessions end
        await self.wait_idle()
        if self._server is not None:
            await self._server.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one connection until both directions end.

        A session never ends cancelled: Python 3.11's stream server logs a cancelled connection task
        as an error, so a cancellation (asyncio.run cleaning up after Ctrl-C) just ends it quietly.
        """
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._writers.add(writer)
        self._connections += 1
        try:
            await self._relay(reader, writer)
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._sessions.discard(task)
            self._writers.discard(writer)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await asyncio.open_connection(self._host, self._upstream_port)
            self._writers.add(upstream)
            await asyncio.gather(self._pump(reader, upstream, True), self._pump(up_reader, writer, False))
        finally:
            if upstream is not None:
                self._writers.discard(upstream)
            await _close(writer, upstream)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: bool) -> None:
        try:
            while data := await reader.read(CHUNK):
                if up:
                    self._up += len(data)
                else:
                    self._down += len(data)
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            writer.transport.abort()


async def _close(*writers: asyncio.StreamWriter | None) -> None:
    for writer in writers:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

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
from dataclasses import dataclass

from wirelab.bench.loopback import LoopbackProxy, close_quietly

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


class CountingRelay(LoopbackProxy):
    """Listens on a free loopback port and relays to `upstream_port`; use `async with`."""

    def __init__(self, upstream_port: int, *, host: str = "127.0.0.1") -> None:
        super().__init__(upstream_port, host=host)
        self._connections = 0
        self._up = 0
        self._down = 0

    def statistics(self) -> RelayStats:
        return RelayStats(self._connections, self._up, self._down)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay one connection until both directions end."""
        self._connections += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            up_reader, upstream = await self._connect_upstream()
            await asyncio.gather(self._pump(reader, upstream, True), self._pump(up_reader, writer, False))
        finally:
            if upstream is not None:
                self._writers.discard(upstream)
            await close_quietly(upstream)

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

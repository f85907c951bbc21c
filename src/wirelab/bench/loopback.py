"""The skeleton of the benches' little TCP proxies: listen on a free loopback port, one task per
accepted connection, and a clean stop that ends every connection and waits for its task.

Subclasses say what one connection does (`_serve`); this keeps the bookkeeping in one place. A
connection's task never ends cancelled: Python 3.11's stream server logs a cancelled connection task
as an error, so a cancellation (asyncio.run cleaning up after Ctrl-C) just ends it quietly.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

__all__ = ["LoopbackProxy", "close_quietly"]


class LoopbackProxy:
    """Listens on a free loopback port in front of `upstream_port`; use `async with`."""

    def __init__(self, upstream_port: int, *, host: str = "127.0.0.1") -> None:
        self._host = host
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def wait_idle(self, seconds: float = 5.0) -> None:
        """Wait (at most `seconds`) until every connection has ended, so the counts are final."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while self._sessions:
                    await asyncio.wait(set(self._sessions))

    async def __aenter__(self) -> Self:
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
            writer.transport.abort()  # reads in the sessions fail and the sessions end
        await self.wait_idle()
        if self._server is not None:
            await self._server.wait_closed()

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self._host, self._upstream_port)
        self._writers.add(writer)
        return reader, writer

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        self._writers.add(writer)
        try:
            await self._serve(reader, writer)
        except (OSError, TimeoutError, asyncio.CancelledError):
            writer.transport.abort()
        finally:
            self._sessions.discard(task)
            self._writers.discard(writer)
            await close_quietly(writer)


async def close_quietly(*writers: asyncio.StreamWriter | None) -> None:
    for writer in writers:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

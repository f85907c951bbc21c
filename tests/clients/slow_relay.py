"""A TCP relay that passes a client's bytes on at a set rate, so an upload through it lasts long enough
to be interrupted part-way (Ctrl-C, SIGKILL) whatever the machine's speed.

It runs its own event loop in a thread, so both in-process clients and child processes can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

__all__ = ["SlowRelay"]

BLOCK = 16 << 10


class SlowRelay:
    def __init__(self, upstream_port: int, *, rate: int) -> None:
        self._upstream_port = upstream_port
        self._rate = rate
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.url = ""

    def __enter__(self) -> SlowRelay:
        self._thread.start()
        assert self._ready.wait(5), "the relay did not start"
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        sessions: set[asyncio.Task[None]] = set()

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            sessions.add(task)
            try:
                await self._session(reader, writer)
            except asyncio.CancelledError:
                pass
            finally:
                sessions.discard(task)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        self._ready.set()
        async with server:
            await self._stop.wait()
            for task in list(sessions):
                task.cancel()
            if sessions:
                await asyncio.wait(sessions)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Relay until either side ends, then close both (a client gone is gone for the server too)."""
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)
        except BaseException:
            writer.close()
            raise
        pumps = [
            asyncio.ensure_future(self._pump(reader, up_writer, self._rate)),
            asyncio.ensure_future(self._pump(up_reader, writer, None)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for side in (writer, up_writer):  # before any await: a second cancel must not skip them
                side.close()
            await asyncio.wait(pumps)
            for side in (writer, up_writer):
                with contextlib.suppress(OSError):
                    await side.wait_closed()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: int | None) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(BLOCK):
                writer.write(data)
                await writer.drain()
                if rate is not None:
                    await asyncio.sleep(len(data) / rate)

"""A tiny stateful TCP service for `wirelab demo restart`: one counter per connection, in memory.

    python -m wirelab.demo.counter --port P [--host H]

Protocol: one ASCII command per line. `INCR` adds one to the connection's counter and answers the new
count; `GET` answers it; anything else is `ERR ...`. A line over MAX_LINE bytes closes the connection.

Theory of operation: the count lives in the connection's session object in this process and nowhere
else, which is the whole point. When the process stops (SIGTERM or SIGINT: it closes every connection
and exits 0), every count is gone, and a client that reconnects starts again from zero.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

__all__ = ["MAX_LINE", "CounterSession", "main", "serve"]

MAX_LINE = 1024


class CounterSession:
    """The protocol of one connection, sans-I/O: `receive_data`, then `data_to_send`."""

    def __init__(self) -> None:
        self.count = 0
        self.closing = False
        self._buffer = bytearray()
        self._out = bytearray()

    def receive_data(self, data: bytes) -> None:
        self._buffer += data
        while not self.closing and (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end]).strip()
            del self._buffer[: end + 1]
            self._out += self._answer(line)
        if len(self._buffer) > MAX_LINE:
            self._out += b"ERR line too long\n"
            self.closing = True

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def _answer(self, line: bytes) -> bytes:
        if line == b"INCR":
            self.count += 1
        elif line != b"GET":
            return b"ERR unknown command; send INCR or GET\n"
        return b"%d\n" % self.count


class _Connection(asyncio.Protocol):
    """The asyncio adapter: feed bytes to the session, write what it answers."""

    def __init__(self, open_connections: set[asyncio.Transport]) -> None:
        self._open = open_connections
        self._session = CounterSession()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._open.add(transport)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._session.receive_data(data)
        self._transport.write(self._session.data_to_send())
        if self._session.closing:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._open.discard(self._transport)


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then close every connection (and with it every count)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    open_connections: set[asyncio.Transport] = set()
    server = await loop.create_server(lambda: _Connection(open_connections), host, port)
    print(f"counter: listening on {host}:{port}", flush=True)
    await stop.wait()
    server.close()
    dropped = len(open_connections)
    for transport in list(open_connections):
        transport.close()
    await server.wait_closed()
    print(f"counter: stopped; {dropped} connection(s) and their counts dropped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wirelab.demo.counter", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args(argv)
    asyncio.run(serve(options.host, options.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A listening socket and its accept loop, as both balancers need them.

One task per accepted connection. At `limit()` open connections the loop stops accepting, so further
clients wait in the kernel's listen backlog instead of being refused or costing memory here; an
accept that fails (EMFILE and the like) backs off instead of spinning. The limit is asked for on
every turn, so a reloaded configuration takes effect at once (call `room()` after changing it).
`open_streams` turns an accepted socket into asyncio streams, with the TLS handshake if asked.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["Acceptor", "open_streams"]

log = logging.getLogger(__name__)

Serve = Callable[[socket.socket, tuple[Any, ...]], Coroutine[Any, Any, None]]


class Acceptor:
    def __init__(self, serve: Serve, *, limit: Callable[[], int], backlog: int = 1024) -> None:
        self._serve = serve
        self._limit = limit
        self._backlog = backlog
        self._room = asyncio.Event()
        self.listener: socket.socket | None = None
        self.connections: set[asyncio.Task[None]] = set()
        self.accepted = 0

    @property
    def address(self) -> tuple[str, int]:
        if self.listener is None:
            raise RuntimeError("not listening")
        host, port = self.listener.getsockname()[:2]
        return host, port

    def listen(self, address: tuple[str, int]) -> None:
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, port), family=family, backlog=self._backlog)
        self.listener.setblocking(False)

    def close(self) -> None:
        """Stop listening; connections already accepted go on."""
        if self.listener is not None:
            self.listener.close()

    def room(self) -> None:
        """The limit may have grown: look again."""
        self._room.set()

    async def run(self) -> None:
        """Accept until cancelled."""
        assert self.listener is not None, "listen() first"
        loop = asyncio.get_running_loop()
        while True:
            while len(self.connections) >= self._limit():
                self._room.clear()
                await self._room.wait()
            try:
                self._start(*await loop.sock_accept(self.listener))
                self._accept_waiting()
            except OSError as exc:
                log.warning("accept failed: %s", exc)
                await asyncio.sleep(0.1)

    def _accept_waiting(self) -> None:
        """Take the connections already in the backlog without waiting for the loop again: under a
        burst of new connections one wake-up serves many."""
        assert self.listener is not None
        while len(self.connections) < self._limit():
            try:
                client, peer = self.listener.accept()
            except BlockingIOError:
                return
            client.setblocking(False)
            self._start(client, peer)

    def _start(self, client: socket.socket, peer: tuple[Any, ...]) -> None:
        self.accepted += 1
        task = asyncio.create_task(self._serve(client, peer))
        self.connections.add(task)
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self.connections.discard(task)
        self._room.set()


async def open_streams(
    sock: socket.socket, *, limit: int, tls: ssl.SSLContext | None = None, handshake_s: float = 10.0
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams over an accepted connection; with `tls`, after the server side of the handshake."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol, sock, ssl=tls, ssl_handshake_timeout=handshake_s if tls else None
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

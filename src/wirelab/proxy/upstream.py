"""Keep-alive connections to backends for the layer 7 balancer: one h11 client per socket, pooled.

Theory of operation: an `Upstream` is one TCP connection to one backend with its h11 client state
machine; the balancer sends a request through it and reads the response as h11 events. When both
sides of the exchange are done (h11's DONE/DONE), `UpstreamPool.release` starts h11's next cycle and
keeps the socket idle for the next request to that backend; anything else (a close, a switch to
another protocol, an error) closes it. An idle socket may have been closed by its backend while it
waited, so `acquire` first peeks at it without blocking: a pending EOF or error means it is dead and
the next one is tried, and only then is a new connection opened. A request can still race a close
the peek did not see; `Upstream.reused` tells the balancer that such a failure says nothing about the
backend's health.
"""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict, deque
from typing import cast

import h11

from wirelab.proto.balance import Backend
from wirelab.proxy.exchange import RECV_BYTES
from wirelab.proxy.l4 import open_tcp

__all__ = ["Upstream", "UpstreamPool", "probe"]


class Upstream:
    """One connection to `backend`; `reused` is true when an earlier request went through it."""

    def __init__(self, backend: Backend, sock: socket.socket) -> None:
        self.backend = backend
        self.sock = sock
        self.conn = h11.Connection(h11.CLIENT)
        self.reused = False

    async def send(self, event: h11.Event) -> None:
        data = self.conn.send(event)
        if data:
            await asyncio.get_running_loop().sock_sendall(self.sock, data)

    async def receive(self) -> None:
        """Read once from the backend into h11 (EOF included, which h11 turns into ConnectionClosed)."""
        self.conn.receive_data(await asyncio.get_running_loop().sock_recv(self.sock, RECV_BYTES))

    async def next_event(self) -> h11.Event | type[h11.PAUSED]:
        """The next h11 event from the backend, reading as needed."""
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            await self.receive()
        return cast("h11.Event | type[h11.PAUSED]", event)

    @property
    def reusable(self) -> bool:
        return self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE

    def close(self) -> None:
        self.sock.close()


class UpstreamPool:
    """Idle keep-alive connections per backend, at most `max_idle` each."""

    def __init__(self, *, connect_timeout_s: float, max_idle: int = 64) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.max_idle = max_idle
        self._idle: defaultdict[str, deque[Upstream]] = defaultdict(deque)
        self.opened = 0
        """Connections opened so far: the tests and the metrics read it to see reuse."""

    async def acquire(self, backend: Backend) -> Upstream:
        """An idle live connection to `backend`, or a new one (OSError/TimeoutError if refused)."""
        idle = self._idle[backend.address]
        while idle:
            upstream = idle.pop()
            if _alive(upstream.sock):
                return upstream
            upstream.close()
        sock = await open_tcp(backend.host, backend.port, within_s=self.connect_timeout_s)
        self.opened += 1
        return Upstream(backend, sock)

    def release(self, upstream: Upstream) -> None:
        """Keep `upstream` for the next request if its exchange ended cleanly; close it otherwise."""
        idle = self._idle[upstream.backend.address]
        if not upstream.reusable or len(idle) >= self.max_idle:
            upstream.close()
            return
        upstream.conn.start_next_cycle()
        upstream.reused = True
        idle.append(upstream)

    def forget(self, backend: Backend) -> None:
        """Close the idle connections to `backend` (it failed: they are likely dead too)."""
        for upstream in self._idle.pop(backend.address, ()):
            upstream.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for upstream in idle:
                upstream.close()
        self._idle.clear()


async def probe(backend: Backend, path: str, *, within_s: float) -> bool:
    """An active health check: GET `path` on a fresh connection; healthy if answered below 500 in time."""
    head = h11.Request(
        method="GET", target=path, headers=[("host", backend.address), ("connection", "close")]
    )
    try:
        async with asyncio.timeout(within_s):
            upstream = Upstream(backend, await open_tcp(backend.host, backend.port, within_s=within_s))
            with upstream.sock:
                await upstream.send(head)
                await upstream.send(h11.EndOfMessage())
                event = await upstream.next_event()
    except (OSError, TimeoutError, h11.ProtocolError):
        return False
    return isinstance(event, h11.Response) and event.status_code < 500


def _alive(sock: socket.socket) -> bool:
    """An idle HTTP connection has nothing to read: EOF, an error or stray bytes all mean discard it."""
    try:
        sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False

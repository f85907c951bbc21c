"""User-space network impairment: a TCP and a UDP proxy that hold what crosses them as a slow, far,
lossy link would, following wirelab.proto.impair's schedule.

Theory of operation: each proxy has two `Link`s, up (client to upstream) and down, shared by all its
connections or mappings as one wire is. What a proxy reads is admitted to its direction's link at
the loop's `now`; the link says when it may leave, and a `Releaser` (one loop timer for a whole heap
of deadlines) writes it then. The kernel is left out: the proxy's sockets see loopback speeds, and
the impairment lives entirely in when the proxy writes.

TCP is terminated on both sides, so the proxy carries a byte stream, not packets: chunks stay in
order and nothing is lost (a stream `Link` refuses a loss; drop packets in a namespace instead, see
wirelab.net.netns). A reader pauses while its direction holds more than `HELD_LIMIT` bytes or the
writer's buffer is full, so a slow link pushes back on the sender instead of filling memory. End of
file travels like data (after everything before it) and becomes a half-close on the other leg; a
connection closes once both directions have ended, or at once when either side resets.

UDP gets one upstream socket per client address (so the upstream tells clients apart, as through
a NAT); datagrams are dropped, delayed and jittered (which may reorder them), and a mapping idle for
`idle_s` is closed. A datagram the kernel cannot take at once is dropped, as UDP allows.

Timers: the standard loop waits in epoll, whose timeout counts whole milliseconds rounded up, so a
timer set for `t` fires somewhere in [t, t + 1 ms). Aiming `EARLY_S` (half a millisecond) before the
deadline, and releasing whatever is due within `EARLY_S` of the clock, centres that error on zero.
(uvloop's clock itself counts whole milliseconds; the standard loop is the precise one here.)
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

from wirelab.errors import ConfigError
from wirelab.proto.impair import Impairment, Link

__all__ = [
    "EARLY_S",
    "HELD_LIMIT",
    "ImpairedTcp",
    "ImpairedUdp",
    "Releaser",
    "impair_tcp",
    "impair_udp",
]

log = logging.getLogger(__name__)

EARLY_S = 0.0005
HELD_LIMIT = 4 << 20
"""Bytes one direction of one TCP connection may hold before its reader pauses: enough for a
bandwidth-delay product of 1 Gbit/s x 30 ms, so the hold itself never caps the rate."""
CHUNK = 16 << 10
"""Bytes read at once: at 10 Mbit/s a chunk is 13 ms on the line, the grain of the rate."""
DATAGRAM_MAX = 65535
Address = tuple[str, int]


class Releaser:
    """Callbacks run at loop times, in (time, arrival) order, on one loop timer aimed at the earliest."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    def at(self, when: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (when, next(self._order), callback))
        if self._heap[0][2] is callback:
            self._arm()

    def close(self) -> None:
        """Forget every pending callback."""
        self._heap.clear()
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self._heap[0][0] - EARLY_S, self._fire) if self._heap else None

    def _fire(self) -> None:
        horizon = self._loop.time() + EARLY_S
        while self._heap and self._heap[0][0] <= horizon:
            heapq.heappop(self._heap)[2]()
        self._timer = None
        self._arm()


class _Held:
    """One direction of one TCP connection: chunks admitted to the link, written when released."""

    def __init__(self, link: Link, releaser: Releaser, writer: asyncio.StreamWriter) -> None:
        self._link = link
        self._releaser = releaser
        self._writer = writer
        self._loop = asyncio.get_running_loop()
        self._room = asyncio.Event()
        self._room.set()
        self.held = 0
        self.carried = 0
        self.ended: asyncio.Future[None] = self._loop.create_future()

    def push(self, data: bytes) -> None:
        """`data`, or end of file when empty; it leaves after everything pushed before it."""
        when = self._link.admit(len(data), self._loop.time())
        assert when is not None, "a stream link never drops"
        self.held += len(data)
        if self.held > HELD_LIMIT:
            self._room.clear()
        self._releaser.at(when, partial(self._release, data))

    async def wait_room(self) -> None:
        await self._room.wait()
        await self._writer.drain()

    def _release(self, data: bytes) -> None:
        self.held -= len(data)
        if self.held <= HELD_LIMIT:
            self._room.set()
        if data and not self._writer.is_closing():
            self.carried += len(data)
            self._writer.write(data)
        elif not data:
            if not self._writer.is_closing() and self._writer.can_write_eof():
                self._writer.write_eof()
            self.ended.set_result(None)


class _Proxy:
    """What both proxies share: the links, the releaser, the listening address."""

    def __init__(self, ordered: bool, listen: Address, upstream: Address, up: Impairment, down: Impairment):
        self.up = Link(up, ordered=ordered)
        self.down = Link(down, ordered=ordered)
        self._listen = listen
        self._upstream = upstream
        self._releaser: Releaser | None = None
        self.address: Address = listen

    @property
    def releaser(self) -> Releaser:
        assert self._releaser is not None, "start() first"
        return self._releaser


class ImpairedTcp(_Proxy):
    """A TCP proxy from `listen` to `upstream` over an impaired link; `start()`, then `stop()`."""

    def __init__(
        self,
        listen: Address,
        upstream: Address,
        *,
        up: Impairment,
        down: Impairment,
        connect_timeout_s: float = 10.0,
    ) -> None:
        super().__init__(True, listen, upstream, up, down)
        self._connect_timeout_s = connect_timeout_s
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], list[asyncio.StreamWriter]] = {}

    async def start(self) -> None:
        """Listen (OSError if the address is taken)."""
        self._releaser = Releaser()
        self._server = await asyncio.start_server(self._connection, *self._listen)
        self.address = self._server.sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        """Stop accepting, reset every open connection and wait for its task."""
        if self._server is not None:
            self._server.close()
        for writers in self._connections.values():
            for writer in writers:
                writer.transport.abort()
        if self._connections:
            await asyncio.wait(self._connections)
        if self._server is not None:
            await self._server.wait_closed()
        self.releaser.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writers = [writer]
        peer = _name(writer.get_extra_info("peername"))
        started = time.monotonic()
        try:
            up_reader, upstream = await self._open_upstream(peer)
        except OSError as exc:
            log.warning("%s: upstream %s unreachable (%s): closed", peer, _name(self._upstream), exc)
            writer.close()
            del self._connections[task]
            return
        writers.append(upstream)
        up, down = _Held(self.up, self.releaser, upstream), _Held(self.down, self.releaser, writer)
        outcome = "closed"
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_carry(reader, up))
                group.create_task(_carry(up_reader, down))
        except* OSError as failure:
            outcome = f"reset ({failure.exceptions[0]})"
        finally:
            for each in writers:
                if outcome == "closed":
                    each.close()
                else:
                    each.transport.abort()
            del self._connections[task]
        seconds = time.monotonic() - started
        log.info(
            "%s: %s after %.3fs, %d bytes up, %d down", peer, outcome, seconds, up.carried, down.carried
        )

    async def _open_upstream(self, peer: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        async with asyncio.timeout(self._connect_timeout_s):
            try:
                return await asyncio.open_connection(*self._upstream)
            except TimeoutError:
                raise OSError(f"no answer within {self._connect_timeout_s:g}s") from None


async def _carry(reader: asyncio.StreamReader, held: _Held) -> None:
    """Reader to link until end of file, then wait for that end to be written."""
    while data := await reader.read(CHUNK):
        held.push(data)
        await held.wait_room()
    held.push(b"")
    await held.ended


@dataclass(eq=False)
class _Mapping:
    """One client address's upstream socket."""

    client: Address
    sock: socket.socket
    last: float
    up: int = 0
    """Datagrams received from the client."""
    down: int = 0
    """Datagrams received from upstream."""


class ImpairedUdp(_Proxy):
    """A UDP proxy from `listen` to `upstream` over an impaired link; `start()`, then `stop()`."""

    def __init__(
        self, listen: Address, upstream: Address, *, up: Impairment, down: Impairment, idle_s: float = 60.0
    ) -> None:
        super().__init__(False, listen, upstream, up, down)
        if not idle_s > 0:
            raise ConfigError(f"idle_s: a UDP mapping's idle time is more than 0 seconds, not {idle_s}")
        self._idle_s = idle_s
        self._listener: socket.socket | None = None
        self._mappings: dict[Address, _Mapping] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Bind (OSError if the address is taken) and resolve the upstream once."""
        self._loop = loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(*self._upstream, type=socket.SOCK_DGRAM)
        host, port = infos[0][4][:2]
        self._upstream = (str(host), int(port))
        family = socket.AF_INET6 if ":" in self._listen[0] else socket.AF_INET
        self._listener = listener = socket.socket(family, socket.SOCK_DGRAM)
        try:
            listener.setblocking(False)
            listener.bind(self._listen)
        except OSError:
            listener.close()
            raise
        self.address = listener.getsockname()[:2]
        self._releaser = Releaser()
        loop.add_reader(listener, self._from_clients)
        self._sweeper = loop.call_later(self._idle_s / 4, self._sweep)

    async def stop(self) -> None:
        """Close the listener and every mapping; datagrams still held are forgotten."""
        assert self._loop is not None and self._listener is not None, "start() first"
        self.releaser.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for mapping in list(self._mappings.values()):
            self._forget(mapping, "closed")
        self._loop.remove_reader(self._listener)
        self._listener.close()

    def _from_clients(self) -> None:
        assert self._listener is not None
        for data, client in _drain(self._listener.recvfrom):
            mapping = self._mappings.get(client) or self._map(client)
            mapping.up += 1
            self._hold(self.up, data, partial(_send, mapping.sock.send, data), mapping)

    def _from_upstream(self, mapping: _Mapping) -> None:
        assert self._listener is not None
        for data in _drain(mapping.sock.recv):
            mapping.down += 1
            self._hold(
                self.down, data, partial(_send, self._listener.sendto, data, mapping.client), mapping
            )

    def _hold(self, link: Link, data: bytes, send: Callable[[], None], mapping: _Mapping) -> None:
        assert self._loop is not None
        mapping.last = now = self._loop.time()
        when = link.admit(len(data), now)
        if when is not None:
            self.releaser.at(when, send)

    def _map(self, client: Address) -> _Mapping:
        assert self._loop is not None and self._listener is not None
        sock = socket.socket(self._listener.family, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(self._upstream)
        mapping = self._mappings[client] = _Mapping(client, sock, self._loop.time())
        self._loop.add_reader(sock, self._from_upstream, mapping)
        log.debug("%s: mapped to %s", _name(client), _name(sock.getsockname()))
        return mapping

    def _sweep(self) -> None:
        assert self._loop is not None
        idle_since = self._loop.time() - self._idle_s
        for mapping in [m for m in self._mappings.values() if m.last < idle_since]:
            self._forget(mapping, f"idle {self._idle_s:g}s")
        self._sweeper = self._loop.call_later(self._idle_s / 4, self._sweep)

    def _forget(self, mapping: _Mapping, why: str) -> None:
        assert self._loop is not None
        del self._mappings[mapping.client]
        self._loop.remove_reader(mapping.sock)
        mapping.sock.close()
        client = _name(mapping.client)
        log.info("%s: mapping %s: %d datagrams up, %d down", client, why, mapping.up, mapping.down)


def _drain(receive: Callable[[int], Any]) -> list[Any]:
    """What the socket holds now; a refused upstream (ICMP port unreachable) reads as nothing."""
    received = []
    with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
        while True:
            received.append(receive(DATAGRAM_MAX))
    return received


def _send(send: Callable[..., int], *args: Any) -> None:
    """Send a released datagram; one the kernel refuses (closed socket, full buffer) is lost."""
    with contextlib.suppress(OSError):
        send(*args)


def _name(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


@asynccontextmanager
async def impair_tcp(
    listen: Address, upstream: Address, *, up: Impairment, down: Impairment
) -> AsyncIterator[ImpairedTcp]:
    """An `ImpairedTcp` running for the block; its `address` is where it listens (port 0: any free)."""
    proxy = ImpairedTcp(listen, upstream, up=up, down=down)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


@asynccontextmanager
async def impair_udp(
    listen: Address, upstream: Address, *, up: Impairment, down: Impairment, idle_s: float = 60.0
) -> AsyncIterator[ImpairedUdp]:
    """An `ImpairedUdp` running for the block; its `address` is where it listens (port 0: any free)."""
    proxy = ImpairedUdp(listen, upstream, up=up, down=down, idle_s=idle_s)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()

"""The layer 4 (TCP) balancer: accept, pick a backend, connect, relay bytes both ways untouched.

Theory of operation: the listener is a raw non-blocking socket accepted with `loop.sock_accept`, not
an asyncio transport, because the data path must own the file descriptors to splice them. Each client
gets a task that asks the `Pool` (wirelab.proto.balance) for a backend, connects within the connect
timeout, writes the optional PROXY header, then hands both sockets to `wirelab.net.relay`. A failed
connect ejects that backend (passive check) and the client is redispatched to another one, so a dead
backend costs clients one connect timeout at most once per ejection. At `max_connections` the accept
loop pauses: further clients wait in the kernel's listen backlog rather than being refused. Active
checks (a TCP connect every interval) feed the pool's rise/fall state machine. `drain` stops accepting
and gives open connections until a deadline; `reload` swaps the configuration under open connections,
which keep the settings they started with.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import socket
from collections.abc import Callable, Iterable
from typing import Any

from wirelab.errors import ConfigError
from wirelab.net import SPLICE_AVAILABLE, relay
from wirelab.net.acceptor import Acceptor
from wirelab.net.connect import open_tcp
from wirelab.proto.balance import Backend, Pool, Transition
from wirelab.proto.proxyproto import encode_v1, encode_v2
from wirelab.proxy.config import L4Config

__all__ = ["L4Balancer", "serve"]

log = logging.getLogger("wirelab.proxy.l4")


class L4Balancer:
    def __init__(self, config: L4Config) -> None:
        self.config = config
        self.pool = Pool(config.backends, algorithm=config.algorithm, health=config.health)
        self.counters = {
            "connect_failures": 0,
            "no_backend": 0,
            "bytes_in": 0,
            "bytes_out": 0,
        }
        self._acceptor = Acceptor(self._serve, limit=lambda: self.config.max_connections)
        self._tasks: dict[str, asyncio.Task[None]] = {}

    @property
    def address(self) -> tuple[str, int]:
        return self._acceptor.address

    async def start(self) -> None:
        self._acceptor.listen(self.config.listen)
        self._tasks["accept"] = asyncio.create_task(self._acceptor.run())
        self._start_checks()
        mode = "splice" if self.config.splice and SPLICE_AVAILABLE else "copy"
        log.info(
            "listening on %s:%d (%s, %s, %d backends)",
            *self.address,
            mode,
            self.config.algorithm,
            len(self.config.backends),
        )

    def statistics(self) -> dict[str, Any]:
        backends = {
            b.address: {"state": self.pool.state(b).value, "active": self.pool.active(b)}
            for b in self.pool.backends
        }
        active = len(self._acceptor.connections)
        return {
            **self.counters,
            "accepted": self._acceptor.accepted,
            "active": active,
            "backends": backends,
        }

    def reload(self, config: L4Config) -> None:
        """Apply `config` to new connections; open ones keep going. The listen address cannot move."""
        if config.listen != self.config.listen:
            log.warning(
                "reload: listen cannot change without a restart; keeping %s:%d", *self.config.listen
            )
            config = dataclasses.replace(config, listen=self.config.listen)
        self.pool.update(config.backends, algorithm=config.algorithm, health=config.health)
        self.config = config
        self._acceptor.room()  # max_connections may have grown
        self._start_checks()
        log.info("reloaded: %d backends, %s", len(config.backends), config.algorithm)

    async def drain(self, grace_s: float) -> int:
        """Stop accepting, let open connections finish for up to `grace_s`; returns how many were cut."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._acceptor.close()
        pending = set(self._acceptor.connections)
        if pending and grace_s > 0:
            log.info("draining %d connections for up to %.1fs", len(pending), grace_s)
            _, pending = await asyncio.wait(pending, timeout=grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    def _start_checks(self) -> None:
        if (previous := self._tasks.pop("checks", None)) is not None:
            previous.cancel()
        if self.config.check_interval_s is not None:
            self._tasks["checks"] = asyncio.create_task(self._check_loop(self.config.check_interval_s))

    async def _serve(self, client: socket.socket, peer: tuple[Any, ...]) -> None:
        config = self.config
        with client:
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connected = await self._connect(peer, config)
            if connected is None:
                return
            upstream, backend = connected
            self.pool.opened(backend)
            try:
                with upstream:
                    await self._forward(client, upstream, config)
            except OSError as exc:
                log.debug("%s:%d via %s: %s", peer[0], peer[1], backend.address, exc)
            finally:
                self.pool.closed(backend)

    async def _forward(self, client: socket.socket, upstream: socket.socket, config: L4Config) -> None:
        if config.proxy_protocol is not None:
            encode = encode_v1 if config.proxy_protocol == "v1" else encode_v2
            header = encode(client.getpeername()[:2], client.getsockname()[:2])
            await asyncio.get_running_loop().sock_sendall(upstream, header)
        result = await relay(client, upstream, splice=config.splice, idle_timeout=config.idle_timeout_s)
        self.counters["bytes_in"] += result.forward
        self.counters["bytes_out"] += result.backward

    async def _connect(
        self, peer: tuple[Any, ...], config: L4Config
    ) -> tuple[socket.socket, Backend] | None:
        """Connect to a backend, redispatching after each failure until none is left up."""
        loop = asyncio.get_running_loop()
        for _ in config.backends:
            self._note(self.pool.handle_timer(loop.time()))
            backend = self.pool.pick(str(peer[0]).encode())
            if backend is None:
                break
            try:
                return await open_tcp(
                    backend.host, backend.port, within_s=config.connect_timeout_s
                ), backend
            except (OSError, TimeoutError) as exc:
                self.counters["connect_failures"] += 1
                log.warning("connect to %s failed: %s", backend.address, exc or "timed out")
                self._note([self.pool.connect_failed(backend, loop.time())])
        self.counters["no_backend"] += 1
        log.warning("no backend available for %s:%d; closing", peer[0], peer[1])
        return None

    async def _check_loop(self, interval: float) -> None:
        while True:
            await asyncio.gather(*(self._probe(backend, interval) for backend in self.pool.backends))
            await asyncio.sleep(interval)

    async def _probe(self, backend: Backend, interval: float) -> None:
        timeout = min(interval, self.config.connect_timeout_s)
        try:
            with await open_tcp(backend.host, backend.port, within_s=timeout) as probe:
                if self.config.proxy_protocol is not None:  # the spec's way to say "only a check"
                    local = (
                        encode_v1(None, None)
                        if self.config.proxy_protocol == "v1"
                        else encode_v2(None, None)
                    )
                    await asyncio.get_running_loop().sock_sendall(probe, local)
                ok = True
        except (OSError, TimeoutError):
            ok = False
        self._note([self.pool.check_result(backend, ok)])

    def _note(self, transitions: Iterable[Transition | None]) -> None:
        for t in transitions:
            if t is not None:
                log.info(
                    "backend %s: %s -> %s (%s)", t.backend.address, t.old.value, t.new.value, t.signal.value
                )


async def serve(load: Callable[[], L4Config]) -> None:
    """Run until SIGTERM or SIGINT, then drain; on SIGHUP call `load` again and apply the result."""
    balancer = L4Balancer(load())
    await balancer.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, _reload, balancer, load)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
    log.info("stopping: no new connections, %d open", balancer.statistics()["active"])
    cut = await balancer.drain(balancer.config.drain_timeout_s)
    log.info("stopped; %d connections cut at the drain deadline", cut)


def _reload(balancer: L4Balancer, load: Callable[[], L4Config]) -> None:
    """A bad file is refused whole: the running configuration stays, and the log says why."""
    try:
        balancer.reload(load())
    except ConfigError as exc:
        log.error("reload refused, configuration unchanged: %s", exc)

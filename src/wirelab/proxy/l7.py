"""The layer 7 (HTTP) balancer: a reverse proxy that picks a backend per request, not per connection.

Theory of operation: clients speak HTTP/1.1 (`wirelab.http.h1server`, our strict parser with its
smuggling defences) or HTTP/2 (`wirelab.http.h2server`: over TLS when ALPN picks h2, or in clear when
the connection opens with the HTTP/2 preface); either way each request reaches `handle` with a
`Downstream` to answer through, so everything below is written once. `handle` routes the request
by host and path prefix to a named pool (`wirelab.proto.routing`), where the pool's algorithm picks
a backend among those that are healthy (`wirelab.proto.balance`: passive ejection, optional active
HTTP checks) and whose circuit breaker admits it (`wirelab.proto.breaker`). The request then goes over
a pooled keep-alive HTTP/1.1 connection (`wirelab.http.h1client`) with hop-by-hop fields dropped
and X-Forwarded-For, Forwarded, X-Forwarded-Proto and Via added; a 101 answer (WebSocket) turns the
client's HTTP/1.1 connection into a relay.

Failures: a backend that refuses the connect, or resets a fresh connection before answering, is
ejected for the health policy's `eject_s`, and the request goes to another backend if replaying it
is safe: always after a failed connect (nothing was sent), and otherwise when it is idempotent (GET,
HEAD, OPTIONS, TRACE, or it carries an Idempotency-Key) and has no body. A failure on a reused
connection is retried the same way without ejecting, as the backend may just have closed an idle
connection; nor is it counted by the backend's breaker, which every other outcome goes to (a 5xx
answer is a failure there: a breaker that opened on stale connections would keep a dead backend from
ever being tried again, and so from being ejected). Cleartext HTTP/1.1 connections start on the fast
path (`wirelab.proxy.l7fast`), which follows these rules without a task per request. The
configuration is `wirelab.proxy.l7config`; `reload` applies a new one to new requests, and `drain`
lets the requests in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from wirelab.errors import ConfigError
from wirelab.http.downstream import Downstream
from wirelab.http.h1client import BackendFailed, Upstream, UpstreamPool, exchange, probe, upstream_head
from wirelab.http.h1server import ClientConnection, GatewayError, serve_h1
from wirelab.http.h2client import (
    H2Upstream,
    Origin,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
    relay,
)
from wirelab.http.h2server import serve_h2
from wirelab.net.acceptor import Acceptor
from wirelab.net.tls import CertificateAuthority, client_context, server_context
from wirelab.proto.balance import Backend, Pool, Transition
from wirelab.proto.breaker import Breakers, BreakerTransition
from wirelab.proto.forwarding import end_to_end, for_http2, forwarded_for, replayable, via
from wirelab.proto.http1 import Request
from wirelab.proxy.l7config import L7Config, PoolConfig, TLSSettings
from wirelab.proxy.l7fast import H2_PREFACE, serve_fast
from wirelab.proxy.metrics import Metrics

__all__ = ["L7Balancer", "serve"]

log = logging.getLogger("wirelab.proxy.l7")

ROUTES_REMEMBERED = 4096
_UNSEEN = ""  # no pool has an empty name


class L7Balancer:
    def __init__(self, config: L7Config) -> None:
        self.config = config
        self.pools: dict[str, Pool] = {}
        self.breakers = Breakers(config.breaker)
        self.upstreams = UpstreamPool(connect_timeout_s=config.connect_timeout_s, parser=config.parser)
        self.h2_upstreams: dict[tuple[str, str, Path | None], H2Upstream] = {}
        """Per (backend address, protocol, CA), for the pools that speak HTTP/2 to their backends: a
        reload that changes how a backend is spoken to gets a client of its own."""
        self.metrics = Metrics()
        self.in_flight = 0
        self._idle = asyncio.Event()
        """Set while no request is in flight: what a drain waits for."""
        self.draining = False
        self._acceptor = Acceptor(self._serve, limit=lambda: self.config.max_connections)
        self._tls: ssl.SSLContext | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._checks: asyncio.Task[None] | None = None
        self._apply(config)

    @property
    def address(self) -> tuple[str, int]:
        return self._acceptor.address

    @property
    def accepted(self) -> int:
        return self._acceptor.accepted

    async def start(self) -> None:
        self._acceptor.listen(self.config.listen)
        self._tasks.append(asyncio.create_task(self._acceptor.run()))
        self._start_checks()
        log.info(
            "listening on %s:%d (%s; pools: %s)",
            *self.address,
            "TLS, h2 and http/1.1" if self._tls else "http/1.1 and h2c",
            ", ".join(f"{p.name}={len(p.backends)}" for p in self.config.pools),
        )

    def reload(self, config: L7Config) -> None:
        """Apply `config` to new requests and connections; the listener itself stays as it was."""
        if config.listen != self.config.listen:
            log.warning("reload: listen changed; it takes a restart to move the listener")
        self._apply(config)
        self.upstreams.connect_timeout_s = config.connect_timeout_s
        self._acceptor.room()
        self._start_checks()
        log.info("reloaded: %s", ", ".join(f"{p.name}={len(p.backends)}" for p in config.pools))

    async def drain(self) -> None:
        """Stop accepting; let the requests in flight finish within `drain_timeout_s`; then close."""
        self.draining = True
        self._acceptor.close()
        if self.in_flight:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.drain_timeout_s):
                    await self._idle.wait()
        if self.in_flight:
            log.warning("drain: %d requests cut after %ss", self.in_flight, self.config.drain_timeout_s)
        await self.close()

    async def close(self) -> None:
        """Stop accepting, cut the open connections, close the idle upstream ones."""
        tasks = {*self._acceptor.connections, *self._tasks, *([self._checks] if self._checks else [])}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._acceptor.close()
        self.upstreams.close()
        await asyncio.gather(*(upstream.aclose() for upstream in self.h2_upstreams.values()))
        self.h2_upstreams.clear()

    def _apply(self, config: L7Config) -> None:
        pools: dict[str, Pool] = {}
        for pool in config.pools:
            kept = self.pools.get(pool.name)
            if kept is None:
                kept = Pool(pool.backends, algorithm=pool.policy, health=config.health)
            else:
                kept.update(pool.backends, algorithm=pool.policy, health=config.health)
            pools[pool.name] = kept
        self.pools = pools
        self.breakers.update(config.breaker, (b.address for p in config.pools for b in p.backends))
        self.pool_configs = {pool.name: pool for pool in config.pools}
        self._routes_seen: dict[tuple[str, bytes], str | None] = {}
        self.metrics_path = None if config.metrics_path is None else config.metrics_path.encode()
        self._tls = _tls_context(config.tls) if config.tls else None
        self.config = config

    def _start_checks(self) -> None:
        """(Re)start the active checks as the configuration says: none, or every `check_interval_s`."""
        if self._checks is not None:
            self._checks.cancel()
            self._checks = None
        if self.config.check_interval_s is not None:
            self._checks = asyncio.create_task(self._check_loop(self.config.check_interval_s))

    async def _check_loop(self, interval: float) -> None:
        """Active HTTP checks (GET `check_path`), each interval, of every backend of every pool."""
        while True:
            within = min(interval, self.config.connect_timeout_s)
            for name, pool in list(self.pools.items()):
                backends, config = pool.backends, self.pool_configs[name]
                results = await asyncio.gather(*(self._probe(b, config, within) for b in backends))
                self._note([pool.check_result(b, ok) for b, ok in zip(backends, results, strict=True)])
            await asyncio.sleep(interval)

    async def _serve(self, sock: socket.socket, peer: tuple[Any, ...]) -> None:
        tls, config, address = self._tls, self.config, str(peer[0])
        try:
            if tls is None:
                client = await serve_fast(self, sock, address)
            else:
                client = await ClientConnection.accept(
                    sock,
                    config.limits,
                    config.idle_timeout_s,
                    tls=tls,
                    handshake_s=config.header_timeout_s,
                    parser=config.parser,
                )
        except (OSError, ssl.SSLError, TimeoutError) as error:
            log.debug("handshake failed: %r", error)
            return
        if client is None:
            return  # the fast path served the connection to its end
        try:
            await self._serve_streams(client, address, "https" if tls else "http")
        except (OSError, TimeoutError) as error:
            log.debug("connection ended: %r", error)
        finally:
            client.close()

    async def _serve_streams(self, client: ClientConnection, address: str, scheme: str) -> None:
        """A connection on the stream path: HTTP/2 (by ALPN, or in clear by its preface), or
        HTTP/1.1 from where the fast path handed it over."""
        config, reader, writer = self.config, client.reader, client.writer
        alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol() if scheme == "https" else None
        first = b"" if alpn or client.resumed else await client.read(config.header_timeout_s)
        if alpn == "h2" or first.startswith(H2_PREFACE):
            await serve_h2(
                reader,
                writer,
                self.handle,
                address,
                scheme=scheme,
                limits=config.limits,
                idle_timeout_s=config.idle_timeout_s,
                received=first,
            )
            return
        client.unread(first)
        await serve_h1(client, self.handle, address, scheme=scheme, header_timeout=config.header_timeout_s)

    def route(self, request: Request) -> str | None:
        """The name of the pool `request` goes to; None if no route takes it.

        Remembered per host and path, as most requests repeat both (at most ROUTES_REMEMBERED, then
        forgotten all at once, so a client cannot make it grow)."""
        key = (_host(request), request.target.partition(b"?")[0])
        seen = self._routes_seen
        name = seen.get(key, _UNSEEN)
        if name is _UNSEEN:
            if len(seen) >= ROUTES_REMEMBERED:
                seen.clear()
            name = seen[key] = self.config.routes.match(*key)
        return name

    async def handle(self, request: Request, downstream: Downstream, peer: str) -> bool:
        """Answer one request, retrying it elsewhere while that is safe; True to keep the connection."""
        if request.target.partition(b"?")[0] == self.metrics_path:
            return await self._serve_metrics(request, downstream)
        name = self.route(request)
        if name is None:
            path = request.target.partition(b"?")[0].decode("latin-1")
            raise GatewayError(404, f"no route for host {_host(request)!r} and path {path!r}")
        self.started()
        try:
            keep = await self._forward(request, downstream, peer, self.pools[name], self.pool_configs[name])
        finally:
            self.ended()
        return keep and not self.draining

    def started(self) -> None:
        """A request is in flight (a drain waits for it)."""
        self.in_flight += 1
        self._idle.clear()

    def ended(self) -> None:
        self.in_flight -= 1
        if not self.in_flight:
            self._idle.set()

    async def _forward(
        self, request: Request, downstream: Downstream, peer: str, pool: Pool, config: PoolConfig
    ) -> bool:
        safe = replayable(request, has_body=downstream.has_body)
        key = _hash_key(request, peer, config.hash_on)
        for attempt in range(2 * len(pool.backends) + 1):
            backend = self.pick(pool, key)
            if backend is None:
                break
            self.metrics.retries += attempt > 0
            try:
                if config.protocol == "http/1.1":
                    return await self._attempt(request, downstream, peer, pool, backend)
                return await self._attempt_h2(request, downstream, peer, pool, backend, config)
            except _Failed as failure:
                self.failed(
                    pool, backend, failure.kind, str(failure), eject=failure.eject, verdict=failure.verdict
                )
                if failure.answered or not (safe or failure.unsent):  # unsent: it may go elsewhere
                    raise GatewayError(502, f"backend {backend.address} failed: {failure}") from None
            except BaseException:
                self.breakers[backend.address].release()
                raise
        raise GatewayError(503, "no backend is available")

    def key(self, request: Request, peer: str, name: str) -> bytes:
        """What the pool `name` hashes to stick `request` to a backend (if its algorithm hashes)."""
        return _hash_key(request, peer, self.pool_configs[name].hash_on)

    def pick(self, pool: Pool, key: bytes) -> Backend | None:
        """A healthy backend of `pool` whose breaker lets one more request through (the request now
        counts against it: `answered`, `failed` or the breaker's `release` settle it)."""
        now = _now()
        self._note(pool.handle_timer(now))
        backend = pool.pick(key, usable=partial(_admits, self.breakers, now))
        if backend is None or not self.breakers[backend.address].allow(now):
            return None
        return backend

    async def _attempt(
        self, request: Request, downstream: Downstream, peer: str, pool: Pool, backend: Backend
    ) -> bool:
        """Over a pooled HTTP/1.1 connection."""
        try:
            upstream = await self.upstreams.acquire(backend)
        except (OSError, TimeoutError) as error:
            raise _Failed("connect", str(error) or "timed out", unsent=True, eject=True) from None
        try:
            return await self._exchange(request, downstream, peer, pool, upstream)
        except BackendFailed as failure:
            # A reused connection may just have been closed by the backend: no sign of its health.
            fresh = not upstream.reused
            raise _Failed(
                failure.kind, str(failure), answered=failure.answered, eject=fresh, verdict=fresh
            ) from None

    async def _exchange(
        self, request: Request, downstream: Downstream, peer: str, pool: Pool, upstream: Upstream
    ) -> bool:
        backend = upstream.backend
        head = upstream_head(request, peer, backend, downstream.scheme, has_body=downstream.has_body)
        started = time.perf_counter()
        pool.opened(backend)
        try:
            keep = await exchange(
                request, head, upstream, downstream, idle_timeout_s=self.config.idle_timeout_s
            )
        except BaseException:
            upstream.close()
            raise
        finally:
            pool.closed(backend)
        self.answered(backend, upstream.status, upstream.answered_at - started)
        self.upstreams.release(upstream)
        return keep

    async def _attempt_h2(
        self,
        request: Request,
        downstream: Downstream,
        peer: str,
        pool: Pool,
        backend: Backend,
        config: PoolConfig,
    ) -> bool:
        """As one stream of the backend's multiplexed HTTP/2 connection, trailers relayed both ways."""
        upstream = self._h2_upstream(backend, config)
        fields, host = forwarded_for(
            request.headers, peer=peer, scheme=downstream.scheme, version=request.version
        )
        body = downstream.body() if downstream.has_body else None
        started = time.perf_counter()
        pool.opened(backend)
        try:
            try:
                response = await upstream.send(
                    request.method,
                    request.target,
                    for_http2(fields, request),
                    body,
                    authority=host or backend.address.encode(),
                    trailers=lambda: end_to_end(downstream.trailers),
                )
            except UpstreamError as error:
                kind, eject = _h2_failure(error)
                raise _Failed(kind, str(error), unsent=error.unprocessed, eject=eject) from None
            answered = time.perf_counter() - started
            try:
                keep = await relay(response, downstream, [via(b"2")])
            except UpstreamError as error:
                raise _Failed(_h2_failure(error)[0], str(error), answered=downstream.answered) from None
            finally:
                await response.aclose()
        finally:
            pool.closed(backend)
        self.answered(backend, response.status, answered)
        return keep

    def answered(self, backend: Backend, status: int, seconds: float) -> None:
        """A backend answered, in `seconds` to the head: the metrics, and its breaker (5xx fails)."""
        self.metrics.observe(backend.address, status, seconds)
        now = _now()
        self._note_breaker(self.breakers[backend.address].record(status < 500, now))

    def _h2_upstream(self, backend: Backend, config: PoolConfig) -> H2Upstream:
        """The backend's HTTP/2 client, made at its first request: one connection, every stream."""
        key = (backend.address, config.protocol, config.cacert)
        upstream = self.h2_upstreams.get(key)
        if upstream is None:
            tls = client_context(config.cacert, alpn=("h2",)) if config.protocol == "h2" else None
            origin = Origin("https" if tls else "http", backend.host, backend.port)
            upstream = H2Upstream(
                origin,
                ssl_context=tls,
                connect_timeout=self.config.connect_timeout_s,
                timeout=self.config.idle_timeout_s,
            )
            self.h2_upstreams[key] = upstream
        return upstream

    async def _probe(self, backend: Backend, config: PoolConfig, within: float) -> bool:
        """An active check: GET `check_path`, healthy if answered below 500 in time, in the pool's
        protocol (an h2c backend may not speak HTTP/1.1 at all)."""
        if config.protocol == "http/1.1":
            return await probe(backend, self.config.check_path, within_s=within)
        path = self.config.check_path.encode()
        try:
            async with asyncio.timeout(within):
                response = await self._h2_upstream(backend, config).send(b"GET", path, [], None)
                await response.aclose()
        except (UpstreamError, TimeoutError):
            return False
        return response.status < 500

    def failed(
        self, pool: Pool, backend: Backend, kind: str, detail: str, *, eject: bool, verdict: bool = True
    ) -> None:
        """An attempt at `backend` failed: the metrics, its breaker (unless the failure is no
        `verdict` on its health), and its ejection if `eject`."""
        log.warning("backend %s: %s (%s)", backend.address, detail, kind)
        self.metrics.errors[backend.address, kind] += 1
        self.upstreams.forget(backend)
        now = _now()
        breaker = self.breakers[backend.address]
        if verdict:
            self._note_breaker(breaker.record(False, now))
        else:
            breaker.release()
        if eject:
            self._note([pool.connect_failed(backend, now)])

    async def _serve_metrics(self, request: Request, downstream: Downstream) -> bool:
        async for _ in downstream.body():
            pass  # a body sent to the metrics path is read and ignored
        body = self.metrics.render(self.pools, self.breakers, self.upstreams.opened)
        fields = [(b"content-type", b"text/plain; version=0.0.4"), (b"content-length", b"%d" % len(body))]
        await downstream.respond(200, b"OK", fields)
        if request.method != b"HEAD":
            await downstream.send(body)
        return await downstream.finish()

    def _note(self, transitions: Iterable[Transition | None]) -> None:
        for t in transitions:
            if t is not None:
                log.info(
                    "backend %s: %s -> %s (%s)", t.backend.address, t.old.value, t.new.value, t.signal.value
                )

    def _note_breaker(self, t: BreakerTransition | None) -> None:
        if t is not None:
            log.info("breaker %s: %s -> %s", t.key, t.old.value, t.new.value)


class _Failed(Exception):
    """One attempt at a backend failed: `unsent` if the request certainly never reached it (it may
    then go to another backend whatever its method), `answered` if the client had a response head
    already (nothing can be retried or answered then), `eject` if it says the backend is unwell,
    `verdict` unless it says nothing of its health (its breaker does not count it then)."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        unsent: bool = False,
        answered: bool = False,
        eject: bool = False,
        verdict: bool = True,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.unsent = unsent
        self.answered = answered
        self.eject = eject
        self.verdict = verdict


def _h2_failure(error: UpstreamError) -> tuple[str, bool]:
    """The metrics' kind of an HTTP/2 failure, and whether it ejects the backend (it could not be
    reached); a reset stream or a GOAWAY says nothing of its health."""
    if isinstance(error, UpstreamUnreachable):
        return "connect", True
    return ("timeout" if isinstance(error, UpstreamTimeout) else "reset"), False


def _tls_context(settings: TLSSettings) -> ssl.SSLContext:
    """Our CA's certificate for the configured names, or the operator's own pair."""
    if settings.cert is not None and settings.key is not None:
        return server_context(settings.cert, settings.key)
    cert, key = CertificateAuthority.load_or_create(settings.ca_dir).issue(settings.names)
    return server_context(cert, key)


def _now() -> float:
    """The loop's clock (CLOCK_MONOTONIC, for asyncio's loop and uvloop's), read without looking the
    loop up: on Python 3.11 that lookup is a getpid system call, and this runs twice per request."""
    return time.monotonic()


def _admits(breakers: Breakers, now: float, backend: Backend) -> bool:
    return breakers[backend.address].available(now)


def _host(request: Request) -> str:
    hosts = request.values(b"host")
    return hosts[0].decode("latin-1") if hosts else ""


def _hash_key(request: Request, peer: str, hash_on: tuple[str, bytes] | None) -> bytes:
    """The sticky key: the named header or cookie, else the client's address."""
    if hash_on is None:
        return peer.encode()
    kind, name = hash_on
    if kind == "header":
        values = request.values(name)
        return values[0] if values else peer.encode()
    for value in request.values(b"cookie"):
        for pair in value.split(b";"):
            key, _, cookie = pair.strip().partition(b"=")
            if key.lower() == name:
                return cookie
    return peer.encode()


async def serve(load: Callable[[], L7Config]) -> None:
    """Run until SIGTERM or SIGINT (then drain); SIGHUP calls `load` again and applies the result."""
    balancer = L7Balancer(load())
    await balancer.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def reload() -> None:
        try:
            balancer.reload(load())
        except ConfigError as error:
            log.error("reload refused, the running configuration stays: %s", error)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    try:
        await stop.wait()
        log.info("draining (%d requests in flight)", balancer.in_flight)
        await balancer.drain()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await balancer.close()
        log.info("stopped")

"""The layer 7 (HTTP/1.1) balancer: a reverse proxy that picks a backend per request, not per connection.

Theory of operation: each client connection has the strict `RequestParser` (our smuggling defences;
a refused request is answered with problem+json and the connection closed) and may carry many
requests (keep-alive). For each request the `Pool` (wirelab.proto.balance) picks a backend, by
smooth weighted round-robin, fewest outstanding requests, or rendezvous hashing of a header or cookie
(sticky sessions); an `UpstreamPool` lends a keep-alive connection to it. The request body and the
response run as two tasks at once, so bodies stream both ways (Content-Length or chunked, re-framed
by h11 upstream and by us downstream), and each response chunk is written as it arrives, which is
what lets Server-Sent Events through. Hop-by-hop fields are dropped; X-Forwarded-For, Forwarded,
X-Forwarded-Proto and Via are added. A 101 answer to an Upgrade (WebSocket) hands both sockets to
`wirelab.net.relay`.

Failures: a backend that refuses the connect, or resets a fresh connection before answering, is
ejected for the health policy's `eject_s` (passive checks), and the request goes to another backend
if replaying it is safe: always after a failed connect (nothing was sent), and otherwise when it is
idempotent (GET, HEAD, OPTIONS, TRACE, or it carries an Idempotency-Key) and has no body. A failure on
a reused keep-alive connection is retried the same way without ejecting, as the backend may just have
closed an idle connection. Optional active checks GET `check_path` on every backend each interval and
feed the pool's rise/fall state machine, which also re-admits a backend that comes back. Against
slowloris, each request head must arrive within `header_timeout_s` and at `max_connections` the accept
loop pauses. Counters and a latency histogram per backend are served in the Prometheus text format at
`metrics_path` on the same listener.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import h11

from wirelab.errors import ConfigError
from wirelab.net import relay
from wirelab.net.acceptor import Acceptor
from wirelab.proto.balance import Backend, HealthPolicy, Pool, Transition
from wirelab.proto.http1 import Data, Limits, Request
from wirelab.proxy.config import parse_address, parse_backend_flag
from wirelab.proxy.exchange import (
    ClientConnection,
    GatewayError,
    answer_requests,
    end_to_end,
    persistent,
    response_head,
)
from wirelab.proxy.metrics import Metrics
from wirelab.proxy.upstream import Upstream, UpstreamPool, probe

__all__ = ["L7Balancer", "L7Config", "Metrics", "l7_config", "serve"]

log = logging.getLogger("wirelab.proxy.l7")

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})
_POLICIES = {"round-robin": "round-robin", "least-outstanding": "least-connections"}


@dataclass(frozen=True, slots=True)
class L7Config:
    listen: tuple[str, int]
    backends: tuple[Backend, ...]
    algorithm: str = "round-robin"
    """round-robin, least-outstanding, hash-header:NAME or hash-cookie:NAME."""
    connect_timeout_s: float = 2.0
    idle_timeout_s: float = 300.0
    header_timeout_s: float = 10.0
    """Time for a request head to arrive, counted from the end of the previous exchange."""
    max_connections: int = 10000
    check_interval_s: float | None = None
    """Seconds between active HTTP checks (GET `check_path`); None: passive checks only."""
    check_path: str = "/"
    metrics_path: str | None = "/__metrics"
    health: HealthPolicy = field(default_factory=HealthPolicy)
    limits: Limits = field(default_factory=Limits)

    @property
    def policy(self) -> str:
        """The `Pool` algorithm the CLI's spelling stands for."""
        return _POLICIES.get(self.algorithm, "source-hash")

    @property
    def hash_on(self) -> tuple[str, bytes] | None:
        """("header" or "cookie", lowercase name) for the hashing algorithms, else None."""
        kind, _, name = self.algorithm.partition(":")
        return (kind.removeprefix("hash-"), name.lower().encode()) if name else None


def l7_config(
    listen: str,
    backends: Iterable[str],
    *,
    algorithm: str = "round-robin",
    connect_timeout_s: float = 2.0,
    idle_timeout_s: float = 300.0,
    header_timeout_s: float = 10.0,
    max_connections: int = 10000,
    check_interval_s: float | None = None,
    check_path: str = "/",
    metrics_path: str | None = "/__metrics",
    eject_s: float = 10.0,
) -> L7Config:
    """Validate the flags' values (the same address and backend rules as the layer 4 balancer)."""
    entries = [parse_backend_flag(text) for text in backends]
    if not entries:
        raise ConfigError("backends: at least one backend is required")
    kind, colon, name = algorithm.partition(":")
    if algorithm not in _POLICIES and not (kind in ("hash-header", "hash-cookie") and colon and name):
        raise ConfigError(
            f"algorithm: {algorithm!r} is not round-robin, least-outstanding, "
            "hash-header:NAME or hash-cookie:NAME"
        )
    for key, path in (("metrics_path", metrics_path), ("check_path", check_path)):
        if path is not None and not path.startswith("/"):
            raise ConfigError(f"{key}: {path!r} must start with /")
    if check_interval_s is not None and check_interval_s <= 0:
        raise ConfigError(f"check_interval: must be greater than 0, got {check_interval_s!r}")
    for key, value in (
        ("connect_timeout", connect_timeout_s),
        ("idle_timeout", idle_timeout_s),
        ("header_timeout", header_timeout_s),
        ("max_connections", max_connections),
    ):
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value!r}")
    return L7Config(
        listen=parse_address(listen, "listen", allow_zero=True),
        backends=tuple(_backend(entry, f"backends[{i}]") for i, entry in enumerate(entries)),
        algorithm=algorithm,
        connect_timeout_s=connect_timeout_s,
        idle_timeout_s=idle_timeout_s,
        header_timeout_s=header_timeout_s,
        max_connections=max_connections,
        check_interval_s=check_interval_s,
        check_path=check_path,
        metrics_path=metrics_path,
        health=HealthPolicy(eject_s=eject_s),
    )


def _backend(entry: dict[str, Any], where: str) -> Backend:
    host, port = parse_address(entry["address"], f"{where}.address")
    weight = int(entry.get("weight", 1))
    if weight < 1:
        raise ConfigError(f"{where}.weight: must be greater than 0, got {weight}")
    return Backend(host, port, weight)


class _BackendFailed(Exception):
    """The backend broke the exchange; `answered` says whether the client already had a response head."""

    def __init__(self, kind: str, detail: str, *, answered: bool) -> None:
        super().__init__(detail)
        self.kind = kind
        self.answered = answered


class _Exchange:
    """One request's trip through one upstream connection."""

    def __init__(
        self, client: ClientConnection, request: Request, upstream: Upstream, *, idle_timeout_s: float
    ) -> None:
        self.client = client
        self.idle_timeout_s = idle_timeout_s
        self.request = request
        self.upstream = upstream
        self.answered = False
        self.sent_at = 0.0
        self.status = 0
        self.head_s = 0.0

    async def run(self, head: h11.Request, *, bodyless: bool) -> bool:
        """Relay the body and the response at the same time; True if the client may send another."""
        await self._up(self.upstream.send(head))
        self.sent_at = time.perf_counter()
        if bodyless:  # the common case, without the cost of two tasks
            await self._up(self.upstream.send(h11.EndOfMessage()))
            return await self._response()
        response = asyncio.create_task(self._response())
        body = asyncio.create_task(self._body())
        try:
            done, _ = await asyncio.wait((response, body), return_when=asyncio.FIRST_EXCEPTION)
            for task in (response, body):  # the backend's error wins over the client's
                if task in done:
                    task.result()
            return await response
        finally:
            response.cancel()
            body.cancel()
            await asyncio.gather(response, body, return_exceptions=True)

    async def _up(self, step: Any) -> Any:
        """Await a step on the upstream side, translating its failures to `_BackendFailed`."""
        try:
            return await step
        except (OSError, h11.ProtocolError) as error:
            kind = "reset" if isinstance(error, OSError) else "protocol"
            raise _BackendFailed(kind, f"{type(error).__name__}: {error}", answered=self.answered) from None

    async def _body(self) -> None:
        async for data in self.client.body():
            await self._up(self.upstream.send(h11.Data(data=data)))
        await self._up(self.upstream.send(h11.EndOfMessage()))

    async def _response(self) -> bool:
        """Relay the response; what one read from the backend yields goes out in one write."""
        chunked = close = False
        out = bytearray()
        while True:
            event = await self._next(out)
            if isinstance(event, h11.InformationalResponse) and event.status_code == 101:
                return await self._switch(event)
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 100 and self.request.version == b"1.1":
                    out += b"HTTP/1.1 100 Continue\r\n\r\n"
            elif isinstance(event, h11.Response):
                self.status, self.head_s = event.status_code, time.perf_counter() - self.sent_at
                keep_alive = persistent(self.request)
                head, chunked, close = response_head(self.request, event, keep_alive=keep_alive)
                out += head
            elif isinstance(event, h11.Data):
                data = event.data
                out += b"%x\r\n%b\r\n" % (len(data), data) if chunked else data
            elif isinstance(event, h11.EndOfMessage):
                await self._flush(out + b"0\r\n\r\n" if chunked else out)
                return not close
            else:
                raise _BackendFailed("reset", "closed before it answered", answered=self.answered)

    async def _next(self, out: bytearray) -> object:
        """The backend's next event; before waiting for its bytes, `out` goes to the client (so each
        Server-Sent Event is written as soon as it arrives)."""
        while True:
            try:
                event = self.upstream.conn.next_event()
            except h11.ProtocolError as error:
                raise _BackendFailed("protocol", str(error), answered=self.answered) from None
            if event is not h11.NEED_DATA:
                return event
            await self._flush(out)
            out.clear()
            await self._up(self.upstream.receive())

    async def _flush(self, out: bytes | bytearray) -> None:
        if out:
            self.answered = True
            await self.client.send(bytes(out))

    async def _switch(self, event: h11.InformationalResponse) -> bool:
        """101 Switching Protocols: pass the head on whole, then relay raw bytes both ways."""
        self.status, self.head_s = 101, time.perf_counter() - self.sent_at
        fields = b"".join(n + b": " + v + b"\r\n" for n, v in event.headers)
        head = b"HTTP/1.1 101 %b\r\n%bvia: 1.1 wirelab\r\n\r\n" % (
            event.reason or b"Switching Protocols",
            fields,
        )
        self.answered = True
        await self.client.send(head + self.upstream.conn.trailing_data[0])
        await relay(self.client.sock, self.upstream.sock, idle_timeout=self.idle_timeout_s)
        return False


class L7Balancer:
    def __init__(self, config: L7Config) -> None:
        self.config = config
        self.pool = Pool(config.backends, algorithm=config.policy, health=config.health)
        self.upstreams = UpstreamPool(connect_timeout_s=config.connect_timeout_s)
        self.metrics = Metrics()
        self._acceptor = Acceptor(self._serve, limit=lambda: self.config.max_connections)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def address(self) -> tuple[str, int]:
        return self._acceptor.address

    @property
    def accepted(self) -> int:
        return self._acceptor.accepted

    async def start(self) -> None:
        self._acceptor.listen(self.config.listen)
        self._tasks.append(asyncio.create_task(self._acceptor.run()))
        if self.config.check_interval_s is not None:
            self._tasks.append(asyncio.create_task(self._check_loop(self.config.check_interval_s)))
        log.info(
            "listening on %s:%d (%s, %d backends)",
            *self.address,
            self.config.algorithm,
            len(self.config.backends),
        )

    async def close(self) -> None:
        """Stop accepting, cut the open connections, close the idle upstream ones."""
        tasks = {*self._acceptor.connections, *self._tasks}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._acceptor.close()
        self.upstreams.close()

    async def _check_loop(self, interval: float) -> None:
        within = min(interval, self.config.connect_timeout_s)
        while True:
            backends = self.pool.backends
            results = await asyncio.gather(
                *(probe(b, self.config.check_path, within_s=within) for b in backends)
            )
            self._note([self.pool.check_result(b, ok) for b, ok in zip(backends, results, strict=True)])
            await asyncio.sleep(interval)

    async def _serve(self, sock: socket.socket, peer: tuple[Any, ...]) -> None:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = ClientConnection(sock, self.config.limits, self.config.idle_timeout_s)
        with sock:
            await answer_requests(
                client,
                lambda: self._next_request(client),
                lambda request: self._exchange(client, request, str(peer[0])),
            )

    async def _next_request(self, client: ClientConnection) -> object:
        """The next request head, within the header timeout: the defence against slowloris."""
        async with asyncio.timeout(self.config.header_timeout_s):
            return await client.next_event()

    async def _exchange(self, client: ClientConnection, request: Request, peer: str) -> bool:
        """Answer one request, retrying it elsewhere while that is safe; True to keep the client."""
        if self._is_metrics(request):
            return await self._serve_metrics(client, request)
        bodyless = _bodyless(request)
        if bodyless:
            await client.next_event()  # its EndOfMessage: a replay then needs nothing from the client
        replayable = bodyless and (
            request.method in _IDEMPOTENT or bool(request.values(b"idempotency-key"))
        )
        key = self._hash_key(request, peer)
        loop = asyncio.get_running_loop()
        for attempt in range(2 * len(self.pool.backends) + 1):
            self._note(self.pool.handle_timer(loop.time()))
            backend = self.pool.pick(key)
            if backend is None:
                break
            self.metrics.retries += attempt > 0
            try:
                upstream = await self.upstreams.acquire(backend)
            except (OSError, TimeoutError) as error:
                self._failed(backend, "connect", str(error) or "timed out", eject=True)
                continue  # nothing was sent: any request may go elsewhere
            try:
                return await self._attempt(client, request, upstream, peer, bodyless=bodyless)
            except _BackendFailed as failure:
                self._failed(backend, failure.kind, str(failure), eject=not upstream.reused)
                if failure.answered or not replayable:
                    raise GatewayError(502, f"backend {backend.address} failed: {failure}") from None
        raise GatewayError(503, "no backend is available")

    async def _attempt(
        self, client: ClientConnection, request: Request, upstream: Upstream, peer: str, *, bodyless: bool
    ) -> bool:
        backend = upstream.backend
        exchange = _Exchange(client, request, upstream, idle_timeout_s=self.config.idle_timeout_s)
        self.pool.opened(backend)
        try:
            keep = await exchange.run(_upstream_request(request, peer, backend), bodyless=bodyless)
        except BaseException:
            upstream.close()
            raise
        finally:
            self.pool.closed(backend)
            if exchange.status:
                self.metrics.observe(backend.address, exchange.status, exchange.head_s)
        self.upstreams.release(upstream)
        return keep

    def _failed(self, backend: Backend, kind: str, detail: str, *, eject: bool) -> None:
        log.warning("backend %s: %s (%s)", backend.address, detail, kind)
        self.metrics.errors[backend.address, kind] += 1
        self.upstreams.forget(backend)
        if eject:
            self._note([self.pool.connect_failed(backend, asyncio.get_running_loop().time())])

    def _hash_key(self, request: Request, peer: str) -> bytes:
        """The sticky key: the named header or cookie, else the client's address."""
        if self.config.hash_on is None:
            return peer.encode()
        kind, name = self.config.hash_on
        if kind == "header":
            values = request.values(name)
            return values[0] if values else peer.encode()
        for value in request.values(b"cookie"):
            for pair in value.split(b";"):
                key, _, cookie = pair.strip().partition(b"=")
                if key.lower() == name:
                    return cookie
        return peer.encode()

    def _is_metrics(self, request: Request) -> bool:
        path = self.config.metrics_path
        return path is not None and request.target.partition(b"?")[0] == path.encode()

    async def _serve_metrics(self, client: ClientConnection, request: Request) -> bool:
        while isinstance(await client.next_event(), Data):
            pass  # a body sent to the metrics path is read and ignored
        body = self.metrics.render(self.pool, self.upstreams.opened)
        keep = persistent(request)
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\n"
            b"content-length: %d\r\nconnection: %b\r\n\r\n"
            % (len(body), b"keep-alive" if keep else b"close")
        )
        await client.send(head + (b"" if request.method == b"HEAD" else body))
        return keep

    def _note(self, transitions: Iterable[Transition | None]) -> None:
        for t in transitions:
            if t is not None:
                log.info(
                    "backend %s: %s -> %s (%s)", t.backend.address, t.old.value, t.new.value, t.signal.value
                )


def _bodyless(request: Request) -> bool:
    return not request.values(b"transfer-encoding") and request.values(b"content-length") in ([], [b"0"])


def _upstream_request(request: Request, peer: str, backend: Backend) -> h11.Request:
    """RFC 9110 §7.6: hop-by-hop fields dropped, Via added; RFC 7239 Forwarded and X-Forwarded-For."""
    upgrade = request.values(b"upgrade") if b"upgrade" in request.tokens(b"connection") else []
    forwarded_fields = (b"x-forwarded-for", b"forwarded", b"x-forwarded-proto")
    fields = [f for f in end_to_end(request.headers) if f[0] not in forwarded_fields]
    if not request.values(b"host"):  # HTTP/1.0 may omit it; h11 speaks 1.1 upstream
        fields.insert(0, (b"host", backend.address.encode()))
    if request.values(b"transfer-encoding"):  # the parser admits only "chunked"; h11 re-chunks it
        fields.append((b"transfer-encoding", b"chunked"))
    node = f'"[{peer}]"' if ":" in peer else peer
    host = request.values(b"host")[:1] or [b""]
    forwarded = f"for={node};proto=http".encode() + (b';host="%b"' % host[0] if host[0] else b"")
    fields += [
        (b"x-forwarded-for", b", ".join([*request.values(b"x-forwarded-for"), peer.encode()])),
        (b"forwarded", b", ".join([*request.values(b"forwarded"), forwarded])),
        (b"x-forwarded-proto", b"http"),
        (b"via", request.version + b" wirelab"),
    ]
    if upgrade:
        fields += [(b"upgrade", upgrade[0]), (b"connection", b"upgrade")]
    return h11.Request(method=request.method, target=request.target, headers=fields)


async def serve(config: L7Config) -> None:
    """Run until SIGTERM or SIGINT."""
    balancer = L7Balancer(config)
    await balancer.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await balancer.close()
        log.info("stopped")

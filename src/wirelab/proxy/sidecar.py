"""The sidecar: an HTTP/1.1 listener beside an application, forwarding over one HTTP/2 connection.

Theory of operation: the application keeps speaking plain HTTP/1.1 to a local port, one request per
connection at a time; the sidecar multiplexes all of them as streams of one HTTP/2 connection to
the upstream (`wirelab.http.h2client`), so the upstream sees one connection instead of one per
client connection, and every request gains what the application never had to implement:

- tracing: a W3C `traceparent` naming a new span of ours, in the trace the request came with or in
  a new one (`tracestate` kept when the trace is), and an `x-request-id`, added when missing and
  echoed on the response; one log line per request names both;
- retries, with a short exponential backoff, while replaying is safe: a bodyless request that the
  upstream certainly did not process (refused stream, above GOAWAY's last stream, no connection),
  and a bodyless idempotent one (GET, HEAD, OPTIONS, TRACE or with an Idempotency-Key) that failed
  or got 502, 503 or 504; never once part of the response went to the client;
- HTTP/1.1 framing on the way back: the upstream's length kept, or chunked when it gave none.

The client side is ours (`wirelab.http.h1server`: the strict parser, keep-alive, pipelining,
problem+json refusals); `handle` serves one request through the `Downstream` interface, so any
client protocol could use it. An unreachable upstream is a 502, one that does not answer within
the timeout a 504. `close` stops accepting, lets the requests in flight finish (within `grace_s`)
and closes the connections, the upstream's with GOAWAY.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from wirelab.errors import ConfigError
from wirelab.http.downstream import Downstream
from wirelab.http.h1server import ClientConnection, GatewayError, serve_h1
from wirelab.http.h2client import H2Upstream, Origin, Response, UpstreamError, UpstreamTimeout, relay
from wirelab.net.acceptor import Acceptor
from wirelab.net.tls import client_context
from wirelab.proto.forwarding import end_to_end, for_http2, replayable, via
from wirelab.proto.http1 import HTTPRequestError, Limits, Request
from wirelab.proto.tracecontext import child, new_span_id, parse
from wirelab.proxy.config import parse_address

__all__ = ["Sidecar", "SidecarConfig", "serve", "sidecar_config"]

log = logging.getLogger("wirelab.sidecar")

_RETRIED_STATUSES = frozenset({502, 503, 504})
_REPLACED = frozenset({b"host", b"traceparent", b"tracestate", b"x-request-id", b"expect"})
BACKOFF_S = 0.05
"""The wait before the first retry; it doubles before each next one."""


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    listen: tuple[str, int]
    upstream: Origin
    cafile: Path | None = None
    """The CA that signed an https:// upstream's certificate; None: the system's CAs."""
    connections: int = 1
    retries: int = 2
    timeout_s: float = 30.0
    """For a stream to open and the response head to come, then for each piece of the body."""
    connect_timeout_s: float = 5.0
    idle_timeout_s: float = 300.0
    header_timeout_s: float = 10.0
    grace_s: float = 10.0
    """How long `close` waits for the requests in flight."""
    max_connections: int = 10000
    limits: Limits = field(default_factory=Limits)


def sidecar_config(
    listen: str,
    upstream: str,
    *,
    cafile: Path | None = None,
    connections: int = 1,
    retries: int = 2,
    timeout_s: float = 30.0,
    connect_timeout_s: float = 5.0,
) -> SidecarConfig:
    """Validate the flags' values; ConfigError names the bad one."""
    origin = Origin.parse(upstream)
    if cafile is not None and origin.scheme != "https":
        raise ConfigError("cacert: only an https:// upstream is checked against a CA")
    if connections < 1:
        raise ConfigError(f"connections: must be at least 1, got {connections}")
    if retries < 0:
        raise ConfigError(f"retries: must be at least 0, got {retries}")
    for key, value in (("timeout", timeout_s), ("connect_timeout", connect_timeout_s)):
        if value <= 0:
            raise ConfigError(f"{key}: must be greater than 0, got {value!r}")
    return SidecarConfig(
        listen=parse_address(listen, "listen", allow_zero=True),
        upstream=origin,
        cafile=cafile,
        connections=connections,
        retries=retries,
        timeout_s=timeout_s,
        connect_timeout_s=connect_timeout_s,
    )


class Sidecar:
    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self.upstream = H2Upstream(
            config.upstream,
            ssl_context=_tls(config),
            connections=config.connections,
            connect_timeout=config.connect_timeout_s,
            timeout=config.timeout_s,
        )
        self._acceptor = Acceptor(self._serve, limit=lambda: config.max_connections)
        self._accepting: asyncio.Task[None] | None = None
        self._busy: set[asyncio.Task[Any]] = set()
        self.stopping = False

    @property
    def address(self) -> tuple[str, int]:
        return self._acceptor.address

    async def start(self) -> None:
        self._acceptor.listen(self.config.listen)
        self._accepting = asyncio.create_task(self._acceptor.run())
        log.info("listening on %s:%d, forwarding to %s over HTTP/2", *self.address, self.config.upstream)

    async def close(self) -> None:
        """Stop accepting; let the requests in flight finish within `grace_s`; close the rest."""
        self.stopping = True
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
        self._acceptor.close()
        connections = set(self._acceptor.connections)
        for task in connections - self._busy:
            task.cancel()  # idle between requests: nothing is lost
        if connections:
            _, late = await asyncio.wait(connections, timeout=self.config.grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*connections, return_exceptions=True)
        await self.upstream.aclose()

    async def _serve(self, sock: socket.socket, peer: tuple[Any, ...]) -> None:
        client = await ClientConnection.accept(sock, self.config.limits, self.config.idle_timeout_s)
        try:
            await serve_h1(
                client, self.handle, peer[0], scheme="http", header_timeout=self.config.header_timeout_s
            )
        finally:
            client.close()

    async def handle(self, request: Request, downstream: Downstream, peer: str) -> bool:
        """Forward one request and relay its answer; True if the client connection may carry another."""
        if request.method == b"CONNECT":
            raise HTTPRequestError(501, "the sidecar forwards requests; it opens no tunnels")
        exchange = _Exchange(self, request, downstream)
        task = asyncio.current_task()
        assert task is not None
        self._busy.add(task)
        try:
            return await exchange.run() and not self.stopping
        finally:
            self._busy.discard(task)
            exchange.log(peer)


class _Exchange:
    """One request's trip: its upstream head, its attempts, and what the log line says of it."""

    def __init__(self, sidecar: Sidecar, request: Request, downstream: Downstream) -> None:
        self.config = sidecar.config
        self.upstream = sidecar.upstream
        self.request = request
        self.downstream = downstream
        self.started = asyncio.get_running_loop().time()
        self.attempts = 0
        self.status: int | str = "-"
        sent = [value.decode("latin-1") for value in request.values(b"traceparent")]
        came = sent[0] if len(sent) == 1 else None  # two are as bad as an invalid one
        self.traceparent = child(came, new_span_id())
        self.trace_id = self.traceparent[3:35]
        self.tracestate = request.values(b"tracestate") if came and parse(came) else []
        self.request_id = (request.values(b"x-request-id") or [uuid.uuid4().hex.encode()])[0]
        self.authority, self.path = _target(request, self.upstream.origin.authority)
        self.bodyless = not downstream.has_body
        self.replayable = replayable(request, has_body=not self.bodyless)
        self.expects_continue = b"100-continue" in request.tokens(b"expect")

    async def run(self) -> bool:
        if self.bodyless:
            async for _ in self.downstream.body():
                pass  # its end: a retry then needs nothing more from the client
        while True:
            response = await self._attempt()
            if response is not None:
                return await self._relay(response)
            await asyncio.sleep(BACKOFF_S * 2 ** (self.attempts - 1))

    async def _attempt(self) -> Response | None:
        """One try; None when it failed in a way worth another (there are tries left)."""
        self.attempts += 1
        last = self.attempts > self.config.retries
        body = None if self.bodyless else self._body()
        try:
            response = await self.upstream.send(
                self.request.method,
                self.path,
                self._fields(),
                body,
                authority=self.authority,
                trailers=lambda: end_to_end(self.downstream.trailers),
            )
        except UpstreamError as failure:
            if not last and self._worth_retrying(failure):
                log.info("attempt %d failed: %s; retrying", self.attempts, failure)
                return None
            raise self._gateway_error(failure) from None
        if response.status in _RETRIED_STATUSES and self.replayable and not last:
            log.info("attempt %d answered %d; retrying", self.attempts, response.status)
            await response.aclose()
            return None
        return response

    async def _body(self) -> AsyncIterator[bytes]:
        """The client's body, asked for with 100 Continue (RFC 9110 §10.1.1) once the upstream stream
        is open: the upstream speaks HTTP/2, which has no use for Expect, so we answer it."""
        if self.expects_continue:
            await self.downstream.respond(100, b"Continue", [])
            await self.downstream.flush()
        async for data in self.downstream.body():
            yield data

    def _worth_retrying(self, failure: UpstreamError) -> bool:
        """Only a bodyless request can be sent again; one the upstream never processed whatever its
        method (RFC 9113 §8.7), an idempotent one after any failure but a timeout (which would only
        come again, later)."""
        if not self.bodyless:
            return False
        return failure.unprocessed or (self.replayable and not isinstance(failure, UpstreamTimeout))

    def _fields(self) -> list[tuple[bytes, bytes]]:
        """RFC 9113 §8.2.2: no connection-specific fields, TE only as "trailers"; Host is :authority."""
        fields = [
            f for f in for_http2(end_to_end(self.request.headers), self.request) if f[0] not in _REPLACED
        ]
        fields.append((b"traceparent", self.traceparent.encode()))
        fields += ((b"tracestate", value) for value in self.tracestate)
        fields.append((b"x-request-id", self.request_id))
        fields.append(via(self.request.version))
        return fields

    async def _relay(self, response: Response) -> bool:
        """The response to the client; a failure now can only cut it short."""
        self.status = response.status
        added = [via(b"2")]
        if not any(name == b"x-request-id" for name, _ in response.headers):
            added.insert(0, (b"x-request-id", self.request_id))
        try:
            return await relay(response, self.downstream, added)
        except UpstreamError as failure:
            error = self._gateway_error(failure)
            if self.downstream.answered:
                self.status = f"{response.status}, cut short"
            raise error from None
        finally:
            await response.aclose()

    def _gateway_error(self, failure: UpstreamError) -> GatewayError:
        self.status = 504 if isinstance(failure, UpstreamTimeout) else 502
        return GatewayError(self.status, f"upstream {self.upstream.origin}: {failure}")

    def log(self, peer: str) -> None:
        ms = (asyncio.get_running_loop().time() - self.started) * 1000
        log.info(
            "%s %s %s %s %.1fms attempts=%d trace=%s request_id=%s",
            peer,
            self.request.method.decode(),
            self.path.decode(errors="replace"),
            self.status,
            ms,
            self.attempts,
            self.trace_id,
            self.request_id.decode(errors="replace"),
        )


def _target(request: Request, default: bytes) -> tuple[bytes, bytes]:
    """(:authority, :path): from Host and the origin-form target, or from an absolute-form one (the
    sidecar set as the application's HTTP proxy)."""
    if request.target.startswith(b"/") or request.target == b"*":
        hosts = request.values(b"host")
        return hosts[0] if hosts and hosts[0] else default, request.target
    url = urlsplit(request.target.decode("ascii"))
    if url.scheme not in ("http", "https") or not url.netloc:
        raise HTTPRequestError(400, "the target is neither a path nor an http:// URL")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return url.netloc.rpartition("@")[2].encode(), path.encode()


def _tls(config: SidecarConfig) -> ssl.SSLContext | None:
    """For an https:// upstream, TLS offering only h2: an upstream without it fails at connect."""
    return client_context(config.cafile, alpn=("h2",)) if config.upstream.scheme == "https" else None


async def serve(config: SidecarConfig) -> None:
    """Run until SIGTERM or SIGINT, then close gracefully."""
    sidecar = Sidecar(config)
    await sidecar.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopping: finishing the requests in flight")
        await sidecar.close()
        log.info("stopped")

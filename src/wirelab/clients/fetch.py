"""Fetch a URL, or a whole page the way a browser loads it, over HTTP/1.0, HTTP/1.1, HTTP/2 or HTTP/3,
and say what it took on the wire: `fetch` and `fetch_page`, the engine of `wirelab fetch` and of the
multiplexing bench.

Theory of operation: each version has a session (`fetch_h1`, `fetch_h2`, `fetch_h3`) with one shape:
`get(path)` one request, `get_all(paths)` many the way that version does them best, `aclose()` the
figures of every connection it opened. A page is its HTML, then every same-origin resource it
references (`<img src>`, `<link href>`, `<script src>`), fetched as a browser would: HTTP/1.0 one
connection per request, HTTP/1.1 over a pool of keep-alive connections (6, like a browser) or
pipelined, HTTP/2 and HTTP/3 all at once as streams of one connection. What the reader learns from
the figures: how many connections and handshakes each version needed, and what they cost in time
and bytes.

    handshakes   TLS or QUIC handshakes made (0 in clear)
    connections  TCP or QUIC connections opened
    bytes_on_wire  TCP payload (TLS records included) or UDP payload (QUIC packets), both ways
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Protocol

from wirelab.clients.fetch_h1 import H1Session
from wirelab.clients.fetch_h2 import H2Session
from wirelab.clients.fetch_h3 import H3Session, Migration
from wirelab.clients.wire import (
    ConnectionStats,
    Dialer,
    Exchange,
    FetchError,
    Recorder,
    Target,
    TraceEvent,
    Tracer,
)
from wirelab.errors import ConfigError
from wirelab.net.tls import client_context

__all__ = [
    "HTTP_VERSIONS",
    "ConnectionStats",
    "Exchange",
    "FetchError",
    "FetchResult",
    "Migration",
    "PageResult",
    "TraceEvent",
    "Tracer",
    "fetch",
    "fetch_page",
    "page_resources",
]

HTTP_VERSIONS = ("1.0", "1.1", "2", "3")


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One URL fetched on a connection of its own."""

    url: str
    http: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body_bytes: int
    content_length: int | None
    sha256: str
    connect_ms: float
    """DNS and TCP connect (QUIC: DNS alone)."""
    handshake_ms: float | None
    """TLS or QUIC handshake, None in clear."""
    first_byte_ms: float
    """Since the start: when the response head arrived."""
    total_ms: float
    bytes_on_wire: int
    handshakes: int
    connections: int
    closed_by_server: bool
    """The server closed the connection after the response (HTTP/1.0)."""
    migration: Migration | None
    path_challenges: int
    """HTTP/3: PATH_CHALLENGE frames the server sent (it validates a new client address)."""
    migration_disabled: bool
    """HTTP/3: the server forbade the client to migrate (disable_active_migration)."""
    connection_stats: tuple[ConnectionStats, ...]
    exchange: Exchange


@dataclass(frozen=True, slots=True)
class PageResult:
    """A page and its resources, fetched like a browser."""

    url: str
    http: str
    page_ms: float
    """From the start to the last byte of the last resource."""
    requests: int
    bytes_on_wire: int
    handshakes: int
    connections: int
    statuses: tuple[int, ...]
    """Of every request, the page's first, then its resources in the page's order."""
    exchanges: tuple[Exchange, ...]
    connection_stats: tuple[ConnectionStats, ...]


class _Session(Protocol):
    async def get(self, path: str, *, keep: bool = False) -> Exchange: ...

    async def get_all(self, paths: list[str]) -> list[Exchange]: ...

    async def aclose(self) -> list[ConnectionStats]: ...


async def fetch(
    url: str,
    *,
    http: str,
    cafile: Path | None = None,
    timeout_s: float = 10.0,
    migrate_after: int | None = None,
    tracer: Tracer | None = None,
) -> FetchResult:
    """GET `url` over HTTP/`http` (1.0, 1.1, 2 or 3) on a new connection, trusting `cafile` (else the
    system's CAs); every connect, handshake and wait within `timeout_s`. HTTP/3 only: move to a new
    UDP port `migrate_after` bytes into the body. `tracer` hears what went over the wire."""
    target = _check(url, http, connections=1, pipeline=False, migrate_after=migrate_after)
    recorder = Recorder(tracer)
    session, h3 = await _open(target, http, recorder, cafile, timeout_s, migrate_after=migrate_after)
    try:
        exchange = await session.get(target.path)
    finally:
        stats = await session.aclose()
    first = stats[0]
    return FetchResult(
        url,
        http,
        exchange.status,
        exchange.headers,
        exchange.body_bytes,
        exchange.content_length,
        exchange.sha256,
        first.connect_ms,
        first.handshake_ms,
        exchange.first_byte_ms,
        exchange.done_ms,
        _bytes_on_wire(stats),
        _handshakes(stats),
        len(stats),
        first.closed_by_server,
        h3.migration if h3 else None,
        h3.path_challenges if h3 else 0,
        h3.migration_disabled if h3 else False,
        tuple(stats),
        exchange,
    )


async def fetch_page(
    url: str,
    *,
    http: str,
    connections: int = 6,
    pipeline: bool = False,
    cafile: Path | None = None,
    timeout_s: float = 10.0,
    tracer: Tracer | None = None,
) -> PageResult:
    """GET the HTML at `url`, then every same-origin resource it references, like a browser: HTTP/1.x
    over up to `connections` connections (`pipeline`: HTTP/1.1 writes each connection's requests at
    once), HTTP/2 and HTTP/3 multiplexed on one. Options as `fetch`'s."""
    target = _check(url, http, connections=connections, pipeline=pipeline, migrate_after=None)
    recorder = Recorder(tracer)
    session, _ = await _open(
        target, http, recorder, cafile, timeout_s, connections=connections, pipeline=pipeline
    )
    try:
        page = await session.get(target.path, keep=True)
        exchanges = [page, *await session.get_all(page_resources(page.body, target))]
    finally:
        stats = await session.aclose()
    return PageResult(
        url,
        http,
        max(exchange.done_ms for exchange in exchanges),
        len(exchanges),
        _bytes_on_wire(stats),
        _handshakes(stats),
        len(stats),
        tuple(exchange.status for exchange in exchanges),
        tuple(exchanges),
        tuple(stats),
    )


def _check(url: str, http: str, *, connections: int, pipeline: bool, migrate_after: int | None) -> Target:
    target = Target.parse(url)
    if http not in HTTP_VERSIONS:
        raise ConfigError(f"HTTP version {http!r}: give one of {', '.join(HTTP_VERSIONS)}")
    if http == "3" and not target.tls:
        raise ConfigError("HTTP/3 runs over QUIC, which is always encrypted: give an https:// URL")
    if pipeline and http != "1.1":
        raise ConfigError(
            "pipelining is HTTP/1.1's (HTTP/1.0 closes after each response; 2 and 3 multiplex)"
        )
    if migrate_after is not None and http != "3":
        raise ConfigError("connection migration is QUIC's: it needs HTTP/3")
    if connections < 1:
        raise ConfigError("connections must be at least 1")
    return target


async def _open(
    target: Target,
    http: str,
    recorder: Recorder,
    cafile: Path | None,
    timeout_s: float,
    *,
    connections: int = 1,
    pipeline: bool = False,
    migrate_after: int | None = None,
) -> tuple[_Session, H3Session | None]:
    """The session for HTTP/`http`, opened (HTTP/3: handshake done; the others connect on demand)."""
    trusted = str(cafile) if cafile is not None else "the system's CAs"
    if http == "3":
        h3 = H3Session(
            target,
            recorder,
            cafile=cafile,
            trusted=trusted,
            within_s=timeout_s,
            migrate_after=migrate_after,
        )
        try:
            await h3.open()
        except BaseException:
            await h3.aclose()
            raise
        return h3, h3
    alpn = ("h2", "http/1.1") if http == "2" else ("http/1.1",)
    context = client_context(cafile, alpn=alpn) if target.tls else None
    dialer = Dialer(target, recorder, context, trusted, timeout_s)
    if http == "2":
        return H2Session(dialer), None
    version = http.encode()
    return H1Session(dialer, version=version, connections=connections, pipeline=pipeline), None


def _bytes_on_wire(stats: Sequence[ConnectionStats]) -> int:
    return sum(one.bytes_sent + one.bytes_received for one in stats)


def _handshakes(stats: Sequence[ConnectionStats]) -> int:
    return sum(one.handshake_ms is not None for one in stats)


_REFERENCING = {"img": "src", "script": "src", "link": "href"}
"""The elements whose attribute names a resource the page needs."""


class _References(HTMLParser):
    """The resources a page makes a browser load: `<img src>`, `<link href>`, `<script src>`."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = _REFERENCING.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.found.append(value)


def page_resources(html: bytes, target: Target) -> list[str]:
    """The paths of the same-origin resources `html` (the page at `target`) references, each once, in
    the page's order."""
    parser = _References()
    parser.feed(html.decode("utf-8", errors="replace"))
    parser.close()
    paths = (target.same_origin_path(reference, target.path) for reference in parser.found)
    return list(dict.fromkeys(path for path in paths if path is not None))

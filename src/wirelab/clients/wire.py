"""What the `wirelab fetch` drivers (HTTP/1.x, HTTP/2, HTTP/3) share: the target, the clock and the
trace, one exchange's record, one connection's record, and opening a TCP connection with its steps
timed and its bytes metered.

Theory of operation: a fetch is about what happens on the wire, so every figure is taken as close to
it as the platform allows. TCP's bytes are read from the kernel (`TCP_INFO`: bytes acknowledged and
received, TLS records and all) rather than counted above TLS; a connection's DNS and connect time and
its TLS handshake time are two steps of `dial`. Times are milliseconds since the fetch began, from
one `Recorder`, which also carries the trace: what a driver shows with `-v` (heads, frames, packets)
as `TraceEvent`s, built only when somebody listens.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import ssl
import struct
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

from wirelab.errors import ConfigError, WirelabError
from wirelab.net.connect import open_tcp

__all__ = [
    "RECV_BYTES",
    "REQUEST_FIELDS",
    "Body",
    "ConnectionStats",
    "Dialed",
    "Dialer",
    "Exchange",
    "FetchError",
    "Recorder",
    "Target",
    "TraceEvent",
    "Tracer",
    "gather_or_cancel",
    "text_fields",
]

T = TypeVar("T")
RECV_BYTES = 64 << 10
REQUEST_FIELDS = ((b"user-agent", b"wirelab-fetch"), (b"accept", b"*/*"))
"""What every request of a fetch says besides its method, target and authority."""
_TCP_BYTES = struct.Struct("=QQ")
"""struct tcp_info's tcpi_bytes_acked and tcpi_bytes_received (Linux 4.1 and later), at offset 120."""
_TCP_BYTES_OFFSET = 120


class FetchError(WirelabError):
    """The fetch could not be done: unreachable, refused, untrusted, or the server broke the protocol.
    The message is one line naming what failed."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where a fetch goes: scheme, host and port (the origin), and the first path."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise ConfigError(f"{url!r} is not a URL: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{url!r}: give an http:// or https:// URL with a host")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path)

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.tls else 80) else f"{host}:{self.port}"

    def same_origin_path(self, reference: str, base_path: str) -> str | None:
        """The path of `reference` (as written in a page at `base_path`) if it is on this origin."""
        parts = urlsplit(urljoin(f"{self.scheme}://{self.authority}{base_path}", reference))
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None
        if (parts.scheme, parts.hostname, port) != (self.scheme, self.host, self.port):
            return None
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


@dataclass(frozen=True, slots=True)
class TraceEvent:
    """One line of a fetch's trace: what connection `connection` sent (`direction` "send"), received
    ("recv"), or a note about it ("note"), at `at_ms` since the fetch began."""

    at_ms: float
    connection: int
    direction: str
    text: str


Tracer = Callable[[TraceEvent], None]


class Recorder:
    """The fetch's clock (milliseconds since it began) and its trace, if anybody listens."""

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.started = time.perf_counter()
        self.tracer = tracer

    def ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def trace(self, connection: int, direction: str, text: str) -> None:
        if self.tracer is not None:
            self.tracer(TraceEvent(self.ms(), connection, direction, text))


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request and its response, as a driver saw it."""

    path: str
    status: int
    headers: tuple[tuple[str, str], ...]
    """The response's fields, names lowercase, in order."""
    body_bytes: int
    sha256: str
    """Of the body, so that a caller can tell which response answered which request."""
    connection: int
    """Which connection carried it, numbered from 1 in the order they were opened."""
    started_ms: float
    first_byte_ms: float
    done_ms: float
    body: bytes = b""
    """Only when it was asked to be kept (the page's HTML)."""

    @property
    def content_length(self) -> int | None:
        values = [value for name, value in self.headers if name == "content-length"]
        return int(values[0]) if values and values[0].isdigit() else None


class Body:
    """A response body as it comes: its size and digest, and the bytes themselves if kept."""

    def __init__(self, *, keep: bool) -> None:
        self.size = 0
        self._digest = hashlib.sha256()
        self._kept: list[bytes] | None = [] if keep else None

    def add(self, data: bytes) -> None:
        self.size += len(data)
        self._digest.update(data)
        if self._kept is not None:
            self._kept.append(data)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    @property
    def data(self) -> bytes:
        return b"".join(self._kept or ())


@dataclass(frozen=True, slots=True)
class ConnectionStats:
    """One connection, once it is closed."""

    number: int
    protocol: str
    """What it spoke: HTTP/1.0, HTTP/1.1, h2, h2c or h3."""
    local_port: int
    connect_ms: float
    """When the connection was up, from the start of the fetch: DNS and the TCP handshake (for
    QUIC: DNS and a UDP socket, the handshake being QUIC's own)."""
    handshake_ms: float | None
    """The TLS or QUIC handshake's own duration, None in clear."""
    requests: int
    bytes_sent: int
    bytes_received: int
    closed_by_server: bool
    """Whether the server closed the connection first (HTTP/1.0, Connection: close)."""


@dataclass(slots=True)
class Dialed:
    """A TCP connection just opened: its timings and its kernel byte meter (a dup of its socket, so the
    counters stay readable whoever closes the connection)."""

    number: int
    local_port: int
    connect_ms: float
    handshake_ms: float | None
    alpn: str | None
    _meter: socket.socket = field(repr=False)

    def stats(self, protocol: str, requests: int, *, closed_by_server: bool = False) -> ConnectionStats:
        """The connection's figures, with the TCP payload bytes sent (and acknowledged) and received
        so far; the meter is closed after."""
        try:
            info = self._meter.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
        finally:
            self._meter.close()
        sent, received = _TCP_BYTES.unpack_from(info, _TCP_BYTES_OFFSET)
        return ConnectionStats(
            self.number,
            protocol,
            self.local_port,
            self.connect_ms,
            self.handshake_ms,
            requests,
            sent,
            received,
            closed_by_server,
        )


@dataclass(frozen=True, slots=True)
class Dialer:
    """How a session opens its TCP connections to `target`: TLS with `ssl_context` if given
    (`trusted` names what it trusts, for errors), each step within `within_s`."""

    target: Target
    recorder: Recorder
    ssl_context: ssl.SSLContext | None
    trusted: str
    within_s: float

    async def dial(self, number: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, Dialed]:
        """Connection `number`: TCP (DNS included), then TLS. Failures are `FetchError`s saying which
        step failed."""
        target, recorder = self.target, self.recorder
        begun = recorder.ms()
        where = f"{target.host}:{target.port}"
        try:
            sock = await open_tcp(target.host, target.port, within_s=self.within_s)
        except TimeoutError:
            raise FetchError(f"{where}: no TCP connection within {self.within_s}s") from None
        except socket.gaierror as error:
            raise FetchError(f"{target.host}: cannot resolve the name ({error.strerror})") from None
        except ConnectionRefusedError:
            raise FetchError(
                f"{where}: connection refused (is anything listening on TCP port {target.port}?)"
            ) from None
        except OSError as error:
            raise FetchError(f"{where}: cannot connect ({error.strerror or error})") from None
        connected = recorder.ms()
        port = sock.getsockname()[1]
        recorder.trace(
            number, "note", f"TCP connected from port {port} to {where} in {connected - begun:.1f} ms"
        )
        meter = sock.dup()
        try:
            reader, writer = await self._start(sock)
        except BaseException as error:
            sock.close()
            meter.close()
            raise _tls_error(error, where, self.trusted, self.within_s) from None
        handshake = None
        alpn = None
        if self.ssl_context is not None:
            handshake = recorder.ms() - connected
            tls = writer.get_extra_info("ssl_object")
            alpn = tls.selected_alpn_protocol()
            recorder.trace(number, "note", f"{tls.version()} handshake in {handshake:.1f} ms, ALPN {alpn}")
        return reader, writer, Dialed(number, port, connected, handshake, alpn, meter)

    async def _start(self, sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Streams over the connected `sock`, after the TLS handshake if there is one."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=RECV_BYTES, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        hostname = self.target.host if self.ssl_context else None
        async with asyncio.timeout(self.within_s):
            transport, _ = await loop.create_connection(
                lambda: protocol, sock=sock, ssl=self.ssl_context, server_hostname=hostname
            )
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


def _tls_error(error: BaseException, where: str, trusted: str, timeout: float) -> BaseException:
    if isinstance(error, ssl.SSLCertVerificationError):
        return FetchError(
            f"TLS: {where}'s certificate is not trusted by {trusted} ({error.verify_message})"
        )
    if isinstance(error, ssl.SSLError):
        return FetchError(
            f"TLS handshake with {where} failed: {error.reason or error} (does it speak TLS?)"
        )
    if isinstance(error, TimeoutError):
        return FetchError(f"TLS handshake with {where} did not finish within {timeout}s")
    if isinstance(error, OSError):
        return FetchError(f"{where}: the connection failed during the TLS handshake ({error})")
    return error


async def gather_or_cancel(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run the coroutines side by side; their results in order. The first failure cancels the
    others (a broken page stops loading, nothing keeps running behind the error) and is raised."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def text_fields(fields: Iterable[tuple[bytes, bytes]]) -> tuple[tuple[str, str], ...]:
    """Header fields as text (ISO-8859-1, which takes any byte, as RFC 9110 §5.5 suggests)."""
    return tuple((bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in fields)

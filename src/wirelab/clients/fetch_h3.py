"""`wirelab fetch` over HTTP/3: aioquic's QUIC connection and its `H3Connection`, on a UDP socket of
our own, every request a QUIC stream.

Theory of operation: `_H3Protocol` is aioquic's asyncio adapter with the HTTP/3 layer on top: QUIC
events go through `H3Connection.handle_event`, and the HTTP/3 events it makes are routed to the
inbox of the request's stream. Bytes on the wire are the UDP payloads, counted as datagrams go and
come. With `-v` a `QuicLogger` of ours hears aioquic's qlog events as they happen (every packet
with its frames, the HTTP/3 frames with their QPACK-decoded fields) and turns each into a line.

Connection migration (RFC 9000 §9): QUIC names a connection by connection IDs, not by addresses, so
a client may move to another address mid-transfer. `migrate_after` bytes into a response, the
session opens a new UDP socket (a new local port), hands the protocol to it, closes the old one and
switches to a fresh connection ID (so the two paths cannot be linked by an observer); the server sees
packets from a new address, checks it can reach it (PATH_CHALLENGE, answered by PATH_RESPONSE) and
goes on. A server may forbid it (the transport parameter disable_active_migration, which caddy's
quic-go sends): then the session stays where it is, as it must.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from aioquic.quic.events import ConnectionTerminated, HandshakeCompleted, QuicEvent
from aioquic.quic.logger import QuicLogger, QuicLoggerTrace

from wirelab.clients.wire import (
    REQUEST_FIELDS,
    Body,
    ConnectionStats,
    Exchange,
    FetchError,
    Recorder,
    Target,
    TraceEvent,
    gather_or_cancel,
    text_fields,
)

__all__ = ["H3Session", "Migration"]

CLOSE_WAIT_S = 1.0
"""How long closing waits for the server to hear CONNECTION_CLOSE."""
_SKIPPED = {
    "transport:datagrams_sent",
    "transport:datagrams_received",
    "recovery:metrics_updated",
    "connectivity:spin_bit_updated",
}
"""qlog events that repeat what the packet events say, or are too many to read (per-ACK metrics)."""


@dataclass(frozen=True, slots=True)
class Migration:
    """The client moved the connection to a new UDP socket mid-transfer."""

    from_port: int
    to_port: int
    at_bytes: int
    """How far into the response body it moved."""


class _MeteredTransport(asyncio.DatagramTransport):
    """A UDP transport that counts what it sends for `protocol`."""

    def __init__(self, transport: asyncio.DatagramTransport, protocol: _H3Protocol) -> None:
        super().__init__()
        self._transport = transport
        self._protocol = protocol

    def sendto(self, data: bytes | bytearray | memoryview, addr: Any = None) -> None:
        self._protocol.bytes_sent += len(data)
        self._transport.sendto(data, addr)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def close(self) -> None:
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class _H3Protocol(QuicConnectionProtocol):
    def __init__(self, quic: QuicConnection) -> None:
        super().__init__(quic)
        self.h3 = H3Connection(quic)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.streams: dict[int, asyncio.Queue[H3Event | None]] = {}
        self.terminated: ConnectionTerminated | None = None
        self.handshake_ended = asyncio.Event()
        """Set once the handshake completed or the connection ended (`terminated` says which)."""
        self.after_datagram: Callable[[], None] = lambda: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_MeteredTransport(cast(asyncio.DatagramTransport, transport), self))

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        self.bytes_received += len(data)
        super().datagram_received(data, addr)
        self.after_datagram()

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, HandshakeCompleted):
            self.handshake_ended.set()
        if isinstance(event, ConnectionTerminated):
            self.terminated = event
            self.handshake_ended.set()
            for waiting in self.streams.values():
                waiting.put_nowait(None)
        for h3_event in self.h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived | DataReceived) and (
                inbox := self.streams.get(h3_event.stream_id)
            ):
                inbox.put_nowait(h3_event)


class _Logger(QuicLogger):
    """aioquic's qlog events, each described as it happens."""

    def __init__(self, session: H3Session) -> None:
        super().__init__()
        self._session = session

    def start_trace(self, is_client: bool, odcid: bytes) -> QuicLoggerTrace:
        return _Trace(self._session, is_client=is_client, odcid=odcid)

    def end_trace(self, trace: QuicLoggerTrace) -> None:
        pass


class _Trace(QuicLoggerTrace):
    def __init__(self, session: H3Session, *, is_client: bool, odcid: bytes) -> None:
        super().__init__(is_client=is_client, odcid=odcid)
        self._session = session

    def log_event(self, *, category: str, event: str, data: dict[str, Any]) -> None:
        self._session.qlog(f"{category}:{event}", data)


class H3Session:
    """One QUIC connection to `target`, every request a stream of it."""

    def __init__(
        self,
        target: Target,
        recorder: Recorder,
        *,
        cafile: Path | None,
        trusted: str,
        within_s: float,
        migrate_after: int | None = None,
    ) -> None:
        self.target = target
        self.recorder = recorder
        self.migration: Migration | None = None
        self.path_challenges = 0
        """PATH_CHALLENGE frames the server sent (it checks a new address before it uses it)."""
        self.migration_disabled = False
        """A migration was asked for, but the server's transport parameters said
        disable_active_migration (RFC 9000 §18.2): the client must not move, so it did not."""
        self._peer_forbids_migration = False
        self._cafile = cafile
        self._trusted = trusted
        self._within_s = within_s
        self._migrate_after = migrate_after
        self._requests = 0
        self._connect_ms = 0.0
        self._handshake_ms = 0.0
        self._family = socket.AF_INET
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _H3Protocol | None = None
        self._held: list[tuple[float, str, dict[str, Any]]] | None = None

    async def open(self) -> None:
        """Resolve, then the QUIC handshake (TLS 1.3 inside QUIC, ALPN h3)."""
        loop = asyncio.get_running_loop()
        target, where = self.target, f"{self.target.host}:{self.target.port}"
        try:
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)
        except socket.gaierror as error:
            raise FetchError(f"{target.host}: cannot resolve the name ({error.strerror})") from None
        self._family, address = infos[0][0], infos[0][4]
        traced = self.recorder.tracer is not None or self._migrate_after is not None
        configuration = QuicConfiguration(
            is_client=True,
            alpn_protocols=H3_ALPN,
            server_name=target.host,
            quic_logger=_Logger(self) if traced else None,
        )
        if self._cafile is not None:
            configuration.load_verify_locations(str(self._cafile))
        protocol = self._protocol = _H3Protocol(QuicConnection(configuration=configuration))
        protocol.after_datagram = self._release
        self._transport = await self._bind()
        self._connect_ms = self.recorder.ms()
        protocol.connect(address)
        try:
            async with asyncio.timeout(self._within_s):
                await protocol.handshake_ended.wait()
        except TimeoutError:
            raise FetchError(
                f"QUIC handshake with {where} did not complete within {self._within_s}s "
                f"(is anything serving HTTP/3 on UDP port {target.port}?)"
            ) from None
        if protocol.terminated is not None:
            reason = protocol.terminated.reason_phrase or f"error {protocol.terminated.error_code:#x}"
            raise FetchError(f"QUIC handshake with {where} failed (trusting {self._trusted}): {reason}")
        self._handshake_ms = self.recorder.ms() - self._connect_ms
        self.recorder.trace(1, "note", f"QUIC handshake in {self._handshake_ms:.1f} ms, ALPN h3")

    async def _bind(self) -> asyncio.DatagramTransport:
        """A new UDP socket on a free port, served by the protocol."""
        sock = socket.socket(self._family, socket.SOCK_DGRAM)
        sock.bind(("::" if self._family == socket.AF_INET6 else "0.0.0.0", 0))
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: self._quic_protocol, sock=sock)
        return transport

    @property
    def _quic_protocol(self) -> _H3Protocol:
        if self._protocol is None:
            raise RuntimeError("the session is not open")
        return self._protocol

    @property
    def local_port(self) -> int:
        return int(self._transport.get_extra_info("sockname")[1]) if self._transport else 0

    def qlog(self, name: str, data: dict[str, Any]) -> None:
        """One qlog event from aioquic. aioquic logs a received packet before it parses its frames
        (it fills the event's frame list as it goes), so what a datagram brings is held until the
        datagram has been processed, then described in order."""
        if name == "transport:packet_received" and self._held is None:
            self._held = []
        if self._held is not None:
            self._held.append((self.recorder.ms(), name, data))
        else:
            self._describe(self.recorder.ms(), name, data)

    def _release(self) -> None:
        held, self._held = self._held or [], None
        for at, name, data in held:
            self._describe(at, name, data)

    def _describe(self, at: float, name: str, data: dict[str, Any]) -> None:
        frames = data.get("frames", [])
        if name == "transport:packet_received":
            self.path_challenges += sum(frame.get("frame_type") == "path_challenge" for frame in frames)
        elif name == "transport:parameters_set" and data.get("owner") == "remote":
            self._peer_forbids_migration = bool(data.get("disable_active_migration"))
        if self.recorder.tracer is None or name in _SKIPPED:
            return
        direction = "recv" if name.endswith(("_received", "_parsed")) else "send"
        if name in ("transport:packet_sent", "transport:packet_received"):
            header = data.get("header", {})
            size = data.get("raw", {}).get("length", "?")
            kind = f"{header.get('packet_type')} packet #{header.get('packet_number')} ({size} B)"
            text = f"{kind}: {', '.join(_frame(frame) for frame in frames)}"
        elif name in ("http:frame_created", "http:frame_parsed"):
            text = _h3_frame(data)
        else:
            direction, text = "note", f"{name} {_fields(data)}"
        self.recorder.tracer(TraceEvent(at, 1, direction, text))

    async def get(self, path: str, *, keep: bool = False) -> Exchange:
        """GET `path` on a new stream and read its response whole."""
        protocol = self._quic_protocol
        stream_id = protocol._quic.get_next_available_stream_id()
        inbox: asyncio.Queue[H3Event | None] = asyncio.Queue()
        protocol.streams[stream_id] = inbox
        request = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", self.target.authority.encode()),
            (b":path", path.encode()),
            *REQUEST_FIELDS,
        ]
        started = self.recorder.ms()
        protocol.h3.send_headers(stream_id, request, end_stream=True)
        protocol.transmit()
        self._requests += 1
        try:
            head = await self._final_head(inbox)
            first_byte, body, ended = self.recorder.ms(), Body(keep=keep), head.stream_ended
            while not ended:
                event = await self._next(inbox)
                if isinstance(event, DataReceived):
                    body.add(event.data)
                    await self._maybe_migrate(body.size)
                ended = event.stream_ended
        finally:
            del protocol.streams[stream_id]
        fields = text_fields(head.headers)
        status = int(dict(fields)[":status"])
        fields = tuple(field for field in fields if not field[0].startswith(":"))
        done = self.recorder.ms()
        return Exchange(
            path, status, fields, body.size, body.sha256, 1, started, first_byte, done, body.data
        )

    async def _final_head(self, inbox: asyncio.Queue[H3Event | None]) -> HeadersReceived:
        """The response's head, after any interim (1xx) ones."""
        while True:
            event = await self._next(inbox)
            if isinstance(event, HeadersReceived) and not dict(event.headers)[b":status"].startswith(b"1"):
                return event

    async def _next(self, inbox: asyncio.Queue[H3Event | None]) -> HeadersReceived | DataReceived:
        try:
            async with asyncio.timeout(self._within_s):
                event = await inbox.get()
        except TimeoutError:
            raise FetchError(
                f"{self.target.authority} sent nothing for {self._within_s}s over QUIC"
            ) from None
        if event is None:
            terminated = self._quic_protocol.terminated
            reason = terminated.reason_phrase if terminated else ""
            raise FetchError(f"the QUIC connection to {self.target.authority} ended: {reason or 'closed'}")
        return cast(HeadersReceived | DataReceived, event)

    async def _maybe_migrate(self, received: int) -> None:
        if self._migrate_after is None or self.migration is not None or received < self._migrate_after:
            return
        if self._peer_forbids_migration:
            self.migration_disabled, self._migrate_after = True, None
            self.recorder.trace(1, "note", "not migrating: the server sent disable_active_migration")
            return
        old, old_port = self._transport, self.local_port
        self._transport = await self._bind()
        if old is not None:
            old.close()
        self._quic_protocol.change_connection_id()
        self.migration = Migration(old_port, self.local_port, received)
        self.recorder.trace(
            1, "note", f"migrated: UDP port {old_port} -> {self.local_port} after {received:,} body bytes"
        )

    async def get_all(self, paths: list[str]) -> list[Exchange]:
        """Every path at once, each a stream of the one connection."""
        return await gather_or_cancel(self.get(path) for path in paths)

    async def aclose(self) -> list[ConnectionStats]:
        protocol = self._protocol
        if protocol is None:
            return []
        protocol.close()
        if self._handshake_ms:  # a connection that never opened has nobody to say goodbye to
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT_S):
                    await protocol.wait_closed()
        port = self.local_port
        if self._transport is not None:
            self._transport.close()
        return [
            ConnectionStats(
                1,
                "h3",
                port,
                self._connect_ms,
                self._handshake_ms,
                self._requests,
                protocol.bytes_sent,
                protocol.bytes_received,
                closed_by_server=False,
            )
        ]


def _frame(frame: dict[str, Any]) -> str:
    kind = frame.get("frame_type", "?")
    rest = {
        key: value for key, value in frame.items() if key not in ("frame_type", "stateless_reset_token")
    }
    return f"{kind}({_fields(rest)})" if rest else str(kind)


def _fields(data: dict[str, Any]) -> str:
    parts = []
    for key, value in data.items():
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{key}={text if len(text) <= 40 else text[:37] + '...'}")
    return " ".join(parts)


def _h3_frame(data: dict[str, Any]) -> str:
    frame = data.get("frame", {})
    kind = str(frame.get("frame_type", "?")).upper()
    text = f"HTTP/3 {kind} stream {data.get('stream_id')} len {data.get('length')}"
    headers = frame.get("headers")
    if headers:
        text += ": " + ", ".join(f"{field['name']}: {field['value']}" for field in headers)
    return text

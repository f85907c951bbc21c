"""HTTP/3 for an ASGI application: QUIC and HTTP/3 from aioquic, each request stream one ASGI call.

Why our own and not hypercorn's: hypercorn's QUIC listener queues at most ten datagrams and drops the
rest, which on a burst (a page's hundred requests, a 16 MiB body) looks exactly like packet loss, and
it waits for one more datagram before it notices a shutdown. What `wirelab bench multiplex` measures is
how HTTP/3 copes with the network's loss, so the server must add none. aioquic's own server routes
datagrams to connections by connection ID, which is also what lets a client move to a new address
mid-transfer (connection migration): the connection follows its ID, not the client's port.

Theory of operation: `serve_h3` starts aioquic's QUIC server; each connection gets an `_H3Protocol`
that feeds QUIC events to an `H3Connection`. A request's HEADERS start a task running the application
with an HTTP scope (`http_version` "3"); its DATA goes to the task's `receive`, and what the
application `send`s becomes HEADERS and DATA frames on the same stream. A stream the client resets,
or a connection that ends, cancels its tasks. A request whose pseudo-headers are malformed, or whose
header section is larger than `max_head_bytes`, is answered with problem+json (400, 431) without the
application; other streams and connections carry on. A HEADERS frame whose encoded section is already
over the limit is refused before QPACK decodes it: ls-qpack fails on a field over 64 KiB, and aioquic
makes a decoding failure a connection error (QPACK_DECOMPRESSION_FAILED), which would end every
stream of the connection instead of answering one with 431.

Garbage datagrams: aioquic's server drops what does not parse as a QUIC packet, answers an unknown
version with Version Negotiation, and routes a short header with an unknown connection ID nowhere.
But a datagram of 1200 bytes or more that parses as a version 1 Initial creates a connection before
anything is decrypted, and that connection would wait out the idle timeout in the server's table; a
connection that has decrypted nothing after a datagram is therefore forgotten at once, silently (a
CONNECTION_CLOSE would be sent to an address that may be forged).

A client that moves to a new address (connection migration) is logged once per move, so the move can
be seen from outside the server.

Request bodies are held in the stream's queue until the application takes them, and QUIC's flow
control (the windows we grant, `_STREAM_WINDOW` per stream) bounds how much a client can send ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.asyncio.server import serve as quic_serve
from aioquic.h3.connection import H3_ALPN, FrameType, H3Connection, H3Stream, HeadersState
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection, QuicConnectionState
from aioquic.quic.events import ConnectionTerminated, ProtocolNegotiated, QuicEvent, StreamReset

from wirelab.http.problem import problem_document

__all__ = ["H3Server", "serve_h3"]

log = logging.getLogger(__name__)
access = logging.getLogger("wirelab.h3.access")

Message = dict[str, Any]
App = Callable[
    [dict[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Any
]

_STREAM_WINDOW = 1 << 20
_CONNECTION_WINDOW = 16 << 20
_IDLE_TIMEOUT_S = 60.0
_REQUIRED = (b":method", b":scheme", b":path")


@dataclass
class _HeadersTooLarge(H3Event):
    """A request's HEADERS frame, refused undecoded: its encoded section is `size` bytes."""

    stream_id: int
    size: int


class _H3Connection(H3Connection):
    """aioquic's HTTP/3 connection, refusing an oversized request head before QPACK decodes it.

    This overrides aioquic internals (`_handle_request_or_push_frame`, the stream's header state, the
    decoder stream): the public API has no hook between a HEADERS frame and its decoding.
    """

    def __init__(self, quic: QuicConnection, max_head_bytes: int) -> None:
        super().__init__(quic)
        self._max_head_bytes = max_head_bytes

    def _handle_request_or_push_frame(
        self, frame_type: int, frame_data: bytes | None, stream: H3Stream, stream_ended: bool
    ) -> list[H3Event]:
        if (
            frame_type == FrameType.HEADERS
            and frame_data is not None
            and len(frame_data) > self._max_head_bytes
            and stream.headers_recv_state == HeadersState.INITIAL
        ):
            stream.headers_recv_state = HeadersState.AFTER_HEADERS  # its DATA may follow, and is ignored
            self._cancel_section(stream.stream_id)
            return [_HeadersTooLarge(stream.stream_id, len(frame_data))]
        return super()._handle_request_or_push_frame(frame_type, frame_data, stream, stream_ended)

    def _cancel_section(self, stream_id: int) -> None:
        """RFC 9204 §4.4.2: a Stream Cancellation tells the client's encoder that the section's
        references to the dynamic table, if any, will never be acknowledged."""
        if self._local_decoder_stream_id is not None:
            self._quic.send_stream_data(self._local_decoder_stream_id, _prefixed(0x40, 6, stream_id))


def _prefixed(first: int, bits: int, value: int) -> bytes:
    """An HPACK/QPACK prefixed integer (RFC 7541 §5.1) whose first byte carries `first`'s flags."""
    limit = (1 << bits) - 1
    if value < limit:
        return bytes([first | value])
    out, value = bytearray([first | limit]), value - limit
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Stream:
    """One request: the body as it comes, and the task that answers it."""

    def __init__(self) -> None:
        self.body: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.status = 0
        """The response's, once its head is sent."""
        self.ended = False
        """The client's body is whole (its last DATA or trailers came)."""
        self.taken = False
        """The application took the last of the body; ASGI's next `receive` waits for a disconnect."""


class _H3Protocol(QuicConnectionProtocol):
    def __init__(self, *args: Any, app: App, server: H3Server, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._app = app
        self._server = server
        self._http: H3Connection | None = None
        self._streams: dict[int, _Stream] = {}

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        """Feed aioquic; forget a connection that decrypted nothing, log a client's move.

        aioquic internals here: the connection's state and paths, the base protocol's timer and the
        server's terminated-handler (which drops every connection ID of ours from its table).
        """
        before = self._quic._network_paths[0].addr if self._quic._network_paths else None
        super().datagram_received(data, addr)
        if self._quic._state is QuicConnectionState.FIRSTFLIGHT:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._connection_terminated_handler()
            self._server.connections.discard(self)
            return
        after = self._quic._network_paths[0].addr
        if before is not None and after != before:
            log.info("HTTP/3 connection moved from %s:%d to %s:%d", *before[:2], *after[:2])

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, ProtocolNegotiated) and event.alpn_protocol in H3_ALPN:
            self._http = _H3Connection(self._quic, self._server.max_head_bytes)
        elif isinstance(event, StreamReset) and event.stream_id in self._streams:
            self._cancel(event.stream_id)
        elif isinstance(event, ConnectionTerminated):
            for stream_id in list(self._streams):
                self._cancel(stream_id)
            self._server.connections.discard(self)
        if self._http is not None:  # it closes the connection itself on a frame it refuses
            for h3_event in self._http.handle_event(event):
                self._h3_event_received(h3_event)

    def _h3_event_received(self, event: H3Event) -> None:
        if isinstance(event, _HeadersTooLarge):
            detail = f"the header section is {event.size} bytes encoded, over the limit"
            self._start(event.stream_id, _Stream(), self._answer(event.stream_id, 431, detail))
        elif isinstance(event, HeadersReceived) and event.stream_id not in self._streams:
            self._request(event)
        elif isinstance(event, DataReceived) and event.stream_id in self._streams:
            stream = self._streams[event.stream_id]
            if not stream.ended:
                stream.ended = event.stream_ended
                message = {"type": "http.request", "body": event.data, "more_body": not event.stream_ended}
                stream.body.put_nowait(message)
        elif isinstance(event, HeadersReceived) and event.stream_ended:  # trailers end the body
            stream = self._streams[event.stream_id]
            if not stream.ended:
                stream.ended = True
                stream.body.put_nowait({"type": "http.request", "body": b"", "more_body": False})

    def _request(self, event: HeadersReceived) -> None:
        stream_id = event.stream_id
        stream = _Stream()
        size = sum(len(name) + len(value) + 32 for name, value in event.headers)  # RFC 9114 §4.2.2
        pseudo = {name: value for name, value in event.headers if name.startswith(b":")}
        if size > self._server.max_head_bytes:
            refusal: tuple[int, str] | None = (431, f"the header section is {size} bytes, over the limit")
        elif any(name not in pseudo for name in _REQUIRED) and pseudo.get(b":method") != b"CONNECT":
            refusal = (400, "a request needs :method, :scheme and :path (RFC 9114 §4.3.1)")
        else:
            refusal = None
        if refusal is not None:
            self._start(stream_id, stream, self._answer(stream_id, *refusal))
        else:
            stream.ended = event.stream_ended
            if event.stream_ended:
                stream.body.put_nowait({"type": "http.request", "body": b"", "more_body": False})
            self._start(stream_id, stream, self._call(stream_id, self._scope(pseudo, event.headers)))

    def _start(self, stream_id: int, stream: _Stream, answer: Coroutine[Any, Any, None]) -> None:
        """Answer `stream` in a task of its own; the stream is forgotten when the task ends."""
        self._streams[stream_id] = stream
        stream.task = asyncio.create_task(answer)
        stream.task.add_done_callback(lambda _task: self._streams.pop(stream_id, None))

    def _scope(self, pseudo: dict[bytes, bytes], headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
        raw_path = pseudo[b":path"]
        path, _, query = raw_path.partition(b"?")
        fields = [(name, value) for name, value in headers if not name.startswith(b":")]
        if b":authority" in pseudo and not any(name == b"host" for name, _ in fields):
            fields.insert(0, (b"host", pseudo[b":authority"]))
        client = self._quic._network_paths[0].addr if self._quic._network_paths else None
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "3",
            "method": pseudo[b":method"].decode("ascii", "replace"),
            "scheme": pseudo[b":scheme"].decode("ascii", "replace"),
            "path": path.decode("utf-8", "replace"),
            "raw_path": path,
            "query_string": query,
            "root_path": "",
            "headers": fields,
            "client": client[:2] if client else None,
            "server": self._server.address,
            "extensions": {},
        }

    async def _call(self, stream_id: int, scope: dict[str, Any]) -> None:
        stream = self._streams[stream_id]

        async def receive() -> Message:
            if stream.taken:
                await asyncio.Event().wait()  # no disconnect message: a reset cancels the task instead
            message = await stream.body.get()
            stream.taken = not message["more_body"]
            return message

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                stream.status = message["status"]
                head = [(b":status", b"%d" % stream.status), *message.get("headers", [])]
                self._send_headers(stream_id, head, end=False)
            elif kind == "http.response.body":
                self._send_data(
                    stream_id, message.get("body", b""), end=not message.get("more_body", False)
                )

        try:
            await self._app(scope, receive, send)
            access.info(
                '%s "%s %s HTTP/3" %d', scope["client"], scope["method"], scope["path"], stream.status
            )
        except Exception:
            log.exception("the application failed on HTTP/3 stream %d", stream_id)
            if not stream.status:
                await self._answer(stream_id, 500, "the server failed to answer; see its log")
            else:
                self._reset(stream_id)

    async def _answer(self, stream_id: int, status: int, detail: str) -> None:
        body = problem_document(status, detail)
        head = [
            (b":status", b"%d" % status),
            (b"content-type", b"application/problem+json"),
            (b"content-length", b"%d" % len(body)),
        ]
        self._send_headers(stream_id, head, end=False)
        self._send_data(stream_id, body, end=True)
        log.info("HTTP/3 stream %d refused: %d %s", stream_id, status, HTTPStatus(status).phrase)

    def _send_headers(self, stream_id: int, headers: list[tuple[bytes, bytes]], *, end: bool) -> None:
        assert self._http is not None
        with contextlib.suppress(Exception):  # the stream or connection is gone: nothing to answer
            self._http.send_headers(stream_id, headers, end_stream=end)
            self.transmit()

    def _send_data(self, stream_id: int, data: bytes, *, end: bool) -> None:
        assert self._http is not None
        with contextlib.suppress(Exception):
            self._http.send_data(stream_id, data, end_stream=end)
            self.transmit()

    def _reset(self, stream_id: int) -> None:
        with contextlib.suppress(Exception):
            self._quic.reset_stream(stream_id, 0x0102)  # H3_INTERNAL_ERROR
            self.transmit()

    def _cancel(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and stream.task is not None:
            stream.task.cancel()

    def tasks(self) -> list[asyncio.Task[None]]:
        return [stream.task for stream in self._streams.values() if stream.task is not None]


class H3Server:
    """The running HTTP/3 listener; `close` lets requests under way finish, within a grace period."""

    def __init__(self, max_head_bytes: int) -> None:
        self.max_head_bytes = max_head_bytes
        self.address: tuple[str, int] = ("", 0)
        self.connections: set[_H3Protocol] = set()
        self._quic: QuicServer | None = None

    def protocol(self, app: App) -> Callable[..., _H3Protocol]:
        def create(*args: Any, **kwargs: Any) -> _H3Protocol:
            protocol = _H3Protocol(*args, app=app, server=self, **kwargs)
            self.connections.add(protocol)
            return protocol

        return create

    async def close(self, grace_s: float) -> None:
        tasks = [task for connection in self.connections for task in connection.tasks()]
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        for task in tasks:
            task.cancel()
        if self._quic is not None:
            self._quic.close()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def serve_h3(
    app: App, *, host: str, port: int, certificate: tuple[Path, Path], max_head_bytes: int
) -> H3Server:
    """Listen for HTTP/3 on UDP `host`:`port`; the caller closes the returned server."""
    cert, key = certificate
    configuration = QuicConfiguration(
        alpn_protocols=H3_ALPN,
        is_client=False,
        max_stream_data=_STREAM_WINDOW,
        max_data=_CONNECTION_WINDOW,
        idle_timeout=_IDLE_TIMEOUT_S,
        # CUBIC, as Linux's TCP and quic-go use: aioquic's default (Reno) halves its window at each loss
        # event where CUBIC keeps 0.7 of it, so under loss HTTP/3 would race HTTP/2 on a meeker controller.
        congestion_control_algorithm="cubic",
    )
    configuration.load_cert_chain(cert, key)
    server = H3Server(max_head_bytes)
    server.address = (host, port)
    server._quic = await quic_serve(
        host, port, configuration=configuration, create_protocol=server.protocol(app)
    )
    return server

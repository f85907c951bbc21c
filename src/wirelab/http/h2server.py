"""The lab's HTTP/2 server connection: each stream of a client's connection is one request, served by
the same `Handler` as HTTP/1.1 (the layer 7 balancer is its user today).

Theory of operation: `serve_h2` drives one sans-I/O `h2.connection.H2Connection` over a client
connection, TLS after ALPN chose "h2" or plain after the client opened with the preface (h2c with
prior knowledge). One loop reads: bytes go to h2, its events are dispatched, and what h2 then has to
send goes out in one write. Each request becomes a `Request` and an `H2Downstream`, the `Downstream` of
its stream, and the handler runs in a task of its own; h2 refuses more open streams than the
SETTINGS_MAX_CONCURRENT_STREAMS we advertise, so at most `MAX_STREAMS` handlers run at once.

Flow control bounds memory both ways. Request DATA waits in its stream's queue and is acknowledged to
the client only once the handler has taken it, so no more than the windows we grant (`STREAM_WINDOW`
per stream, `CONNECTION_WINDOW` in all) is ever held, and a slow backend slows the client down. The
response is cut to fit the client's windows, and `send` waits for its WINDOW_UPDATE, so a slow
client slows the backend down.

Failures stay on their stream where HTTP/2 allows it (RFC 9113 §5.4): a malformed request is reset
with PROTOCOL_ERROR; a header section over `limits.max_header_bytes` (advertised as
SETTINGS_MAX_HEADER_LIST_SIZE) is answered 431, but one over twice that ends the connection, as
decoding it is the attack; a body over `limits.max_body_bytes` is answered 413, before the handler
runs if its Content-Length says so. A handler's `GatewayError` or `HTTPRequestError` is answered
with problem+json, or resets the stream if the response had begun; a response complete before its
request is stopped with RST_STREAM NO_ERROR (§8.1). A client's RST_STREAM cancels its handler;
a client that resets more than `MAX_RESETS_PER_S` streams in a second is sent GOAWAY
ENHANCE_YOUR_CALM and cut off (the "rapid reset" attack, CVE-2023-44487: each stream costs the
server a handler started and cancelled, and costs the client nothing).
However the connection ends (the client closes or breaks the protocol, it idles with no stream open,
or the serving task is cancelled), the client is sent a GOAWAY naming the last stream processed,
every handler is cancelled and awaited, and the socket closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import ProtocolError
from h2.settings import SettingCodes, Settings
from h2.utilities import HeaderValidationFlags, validate_headers

from wirelab.http.downstream import Handler
from wirelab.http.h1server import RECV_BYTES, GatewayError
from wirelab.http.problem import problem_document
from wirelab.proto.forwarding import end_to_end
from wirelab.proto.http1 import HTTPRequestError, Limits, Request

__all__ = [
    "CONNECTION_WINDOW",
    "MAX_RESETS_PER_S",
    "MAX_STREAMS",
    "STREAM_WINDOW",
    "H2Downstream",
    "serve_h2",
]

log = logging.getLogger(__name__)

MAX_STREAMS = 100
STREAM_WINDOW = 256 << 10
CONNECTION_WINDOW = 1 << 20
_DEFAULT_WINDOW = 65535  # RFC 9113 §6.9.2: every window starts there until SETTINGS or WINDOW_UPDATE
_HPACK_BOMB = 2  # times max_header_bytes: past it, the header section ends the connection
MAX_RESETS_PER_S = 200
_REQUEST_HEADERS = HeaderValidationFlags(
    is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False
)
_Headers = list[tuple[bytes, bytes]]


async def serve_h2(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    handler: Handler,
    peer: str,
    *,
    scheme: str,
    limits: Limits,
    idle_timeout_s: float,
    received: bytes = b"",
) -> None:
    """Serve one client's HTTP/2 connection; `received` is what was read of it already (the preface)."""
    connection = _Connection(writer, handler, peer, scheme=scheme, limits=limits)
    try:
        await connection.receive(reader, received, idle_timeout_s)
    except (OSError, TimeoutError) as error:
        log.debug("HTTP/2 connection from %s ended: %r", peer, error)
    finally:
        await connection.close()


class H2Downstream:
    """One stream's `Downstream`: the request body from its DATA frames, the response back on it."""

    def __init__(
        self, connection: _Connection, stream_id: int, *, scheme: str, has_body: bool, max_body: int | None
    ) -> None:
        self.scheme = scheme
        self.has_body = has_body
        self.stream_id = stream_id
        self.task: asyncio.Task[None] | None = None
        self._connection = connection
        self._max_body = max_body
        self._chunks: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._unacknowledged = 0
        self._answered = False
        self._finished = False
        self._request_ended = not has_body
        self._reset = False
        self.trailers: list[tuple[bytes, bytes]] = []

    @property
    def answered(self) -> bool:
        return self._answered

    @property
    def closed(self) -> bool:
        """Whether h2 has closed the stream (RFC 9113 §5.1): reset, or ended by both sides."""
        return self._reset or (self._finished and self._request_ended)

    async def body(self) -> AsyncIterator[bytes]:
        """The client may send more only as the handler takes what came: the window is given back here.
        Once the body has been read, `has_body` is False."""
        taken = 0
        while self.has_body and (chunk := await self._chunks.get()) is not None:
            data, size = chunk
            taken += len(data)
            if self._max_body is not None and taken > self._max_body:
                raise _body_too_large(self._max_body)
            yield data
            self._acknowledge(size)
        self.has_body = False

    async def respond(self, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """HTTP/2 has no reason phrase and no connection-specific fields (RFC 9113 §8.2.2)."""
        fields = end_to_end((name.lower(), value) for name, value in headers)
        self._connection.h2.send_headers(self.stream_id, [(b":status", b"%d" % status), *fields])
        self._answered = True

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            size = await self._connection.window(self.stream_id, len(view))
            self._connection.h2.send_data(self.stream_id, view[:size])
            view = view[size:]
        await self._connection.flush()

    async def flush(self) -> None:
        await self._connection.flush()

    async def finish(self, trailers: Sequence[tuple[bytes, bytes]] = ()) -> bool:
        """Trailers are a last HEADERS frame ending the stream (RFC 9113 §8.1). The connection
        outlives the stream: HTTP/2 always may carry another request."""
        fields = end_to_end((name.lower(), value) for name, value in trailers)
        if fields:
            self._connection.h2.send_headers(self.stream_id, fields, end_stream=True)
        else:
            self._connection.h2.end_stream(self.stream_id)
        self._finished = True
        await self._connection.flush()
        return True

    async def refuse(self, status: int, detail: str) -> None:
        """Answer an RFC 9457 problem, or cut the response short if it has begun."""
        if self._answered:
            self.reset(ErrorCodes.INTERNAL_ERROR)
            return
        body = problem_document(status, detail)
        fields = [(b"content-type", b"application/problem+json"), (b"content-length", b"%d" % len(body))]
        await self.respond(status, b"", fields)
        await self.send(body)
        await self.finish()

    def reset(self, code: ErrorCodes) -> None:
        if not self.closed:
            self._connection.h2.reset_stream(self.stream_id, code)
            self._reset = True

    def release(self) -> None:
        """After the handler: give back the window of what it left unread, and stop a client still
        sending a body the answer no longer needs (NO_ERROR, RFC 9113 §8.1)."""
        self._acknowledge(self._unacknowledged)
        self.reset(ErrorCodes.NO_ERROR if self._finished else ErrorCodes.INTERNAL_ERROR)

    def received(self, data: bytes, size: int) -> None:
        self._unacknowledged += size
        self._chunks.put_nowait((data, size))

    def request_ended(self) -> None:
        self._request_ended = True
        self._chunks.put_nowait(None)

    def was_reset(self) -> None:
        self._reset = True
        if self.task is not None:
            self.task.cancel()

    def _acknowledge(self, size: int) -> None:
        self._unacknowledged -= size
        self._connection.acknowledge(self.stream_id, size)


class _Connection:
    """The h2 state of one client connection, its socket's writing side, and its streams."""

    def __init__(
        self, writer: asyncio.StreamWriter, handler: Handler, peer: str, *, scheme: str, limits: Limits
    ) -> None:
        self.h2 = H2Connection(
            H2Configuration(client_side=False, header_encoding=None, validate_inbound_headers=False)
        )
        self.h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_bytes,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            },
        )
        self.h2.decoder.max_header_list_size = _HPACK_BOMB * limits.max_header_bytes
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)
        self._writer = writer
        self._handler = handler
        self._peer = peer
        self._scheme = scheme
        self._limits = limits
        self._streams: dict[int, H2Downstream] = {}
        self._window_opened = asyncio.Event()
        self._idle: asyncio.Timeout | None = None
        self._idle_timeout_s = 0.0
        self._goaway_sent = False
        self._closing = False
        self._resets = 0
        self._resets_since = 0.0

    async def receive(self, reader: asyncio.StreamReader, data: bytes, idle_timeout_s: float) -> None:
        """Feed h2 until the client closes, says GOAWAY or breaks the protocol, or idles too long."""
        self._idle_timeout_s = idle_timeout_s
        try:
            async with asyncio.timeout(None) as self._idle:
                self._idle_from_now()
                while self._receive(data):
                    await self.flush()
                    data = await reader.read(RECV_BYTES)
                    if not data:
                        return
        finally:
            self._idle = None

    def _receive(self, data: bytes) -> bool:
        """Handle what arrived; False once the connection is over."""
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as error:  # h2 has queued its GOAWAY with the error code
            log.info("HTTP/2 connection from %s broke the protocol: %s", self._peer, error)
            self._goaway_sent = True
            return False
        for event in events:
            self._dispatch(event)
        if self._resets > MAX_RESETS_PER_S:
            log.warning("%s reset over %d streams in a second: GOAWAY", self._peer, MAX_RESETS_PER_S)
            self.h2.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            self._goaway_sent = True
            return False
        return not any(isinstance(event, ConnectionTerminated) for event in events)

    def _dispatch(self, event: Event) -> None:
        stream = self._streams.get(getattr(event, "stream_id", 0))
        match event:
            case RequestReceived():
                self._start(event)
            case DataReceived() if stream is not None and event.data:
                stream.received(event.data, event.flow_controlled_length)
            case DataReceived():  # padding only, or a stream whose handler is done: nobody will read it
                self.acknowledge(event.stream_id, event.flow_controlled_length)
            case TrailersReceived() if stream is not None:
                stream.trailers = [(bytes(name), bytes(value)) for name, value in event.headers]
            case StreamEnded() if stream is not None:
                stream.request_ended()
            case StreamReset() if stream is not None:
                self._count_reset()
                stream.was_reset()
            case WindowUpdated() | RemoteSettingsChanged():
                self._window_opened.set()
                self._window_opened = asyncio.Event()

    def _count_reset(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._resets_since > 1.0:
            self._resets, self._resets_since = 0, now
        self._resets += 1

    def _start(self, event: RequestReceived) -> None:
        try:
            headers: _Headers = list(validate_headers(event.headers, _REQUEST_HEADERS))
        except ProtocolError as error:
            log.info("malformed request on stream %d from %s: %s", event.stream_id, self._peer, error)
            self.h2.reset_stream(event.stream_id, ErrorCodes.PROTOCOL_ERROR)
            return
        has_body = event.stream_ended is None
        stream = H2Downstream(
            self,
            event.stream_id,
            scheme=self._scheme,
            has_body=has_body,
            max_body=self._limits.max_body_bytes,
        )
        stream.task = asyncio.create_task(self._serve(stream, headers), name=f"h2 stream {event.stream_id}")
        # A callback, not a `finally`: a task cancelled before it starts (RST_STREAM right behind the
        # HEADERS) never runs its coroutine, and its stream must be released all the same.
        stream.task.add_done_callback(lambda _: self._release(stream))
        self._streams[event.stream_id] = stream
        if self._idle is not None:
            self._idle.reschedule(None)

    async def _serve(self, stream: H2Downstream, headers: _Headers) -> None:
        try:
            await self._answer(stream, headers)
        except (OSError, ProtocolError) as error:  # the client went away, or closed the stream under us
            log.debug("stream %d from %s ended: %r", stream.stream_id, self._peer, error)
        except Exception:  # a broken handler must not take the connection's other streams with it
            log.exception("stream %d from %s failed", stream.stream_id, self._peer)
            stream.reset(ErrorCodes.INTERNAL_ERROR)

    async def _answer(self, stream: H2Downstream, headers: _Headers) -> None:
        try:
            await self._handler(_request(headers, self._limits), stream, self._peer)
        except (GatewayError, HTTPRequestError) as error:
            log.info("stream %d from %s refused: %s %s", stream.stream_id, self._peer, error.status, error)
            await stream.refuse(error.status, error.detail)

    def _release(self, stream: H2Downstream) -> None:
        del self._streams[stream.stream_id]
        if self._closing:
            return
        stream.release()
        self.write()
        if not self._streams:
            self._idle_from_now()

    def _idle_from_now(self) -> None:
        if self._idle is not None:
            self._idle.reschedule(asyncio.get_running_loop().time() + self._idle_timeout_s)

    async def window(self, stream_id: int, wanted: int) -> int:
        """How much of `wanted` the client lets us send now, waiting (our output flushed) for more."""
        while (size := min(wanted, self.h2.local_flow_control_window(stream_id))) <= 0:
            opened = self._window_opened
            await self.flush()
            await opened.wait()
        return min(size, self.h2.max_outbound_frame_size)

    def acknowledge(self, stream_id: int, size: int) -> None:
        if size and not self._closing:
            self.h2.acknowledge_received_data(size, stream_id)
            self.write()

    def write(self) -> None:
        """Everything h2 has queued, from every stream, goes out in one write."""
        if (data := self.h2.data_to_send()) and not self._writer.is_closing():
            self._writer.write(data)

    async def flush(self) -> None:
        self.write()
        await self._writer.drain()

    async def close(self) -> None:
        """GOAWAY naming the last stream processed, then no handler outlives the connection."""
        self._closing = True
        if not self._goaway_sent:
            self.h2.close_connection()
        self.write()
        tasks = [stream.task for stream in self._streams.values() if stream.task is not None]
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


def _request(headers: _Headers, limits: Limits) -> Request:
    """The stream's request as HTTP/1.1 would carry it: :authority is its Host (RFC 9113 §8.3.1)."""
    fields = tuple((name, value) for name, value in headers if not name.startswith(b":"))
    size = sum(len(name) + len(value) + 32 for name, value in headers)  # as RFC 9113 §6.5.2 counts
    if size > limits.max_header_bytes or len(fields) > limits.max_headers:
        raise HTTPRequestError(
            431,
            f"the header section is over {limits.max_header_bytes} bytes or {limits.max_headers} fields",
        )
    pseudo = {name: value for name, value in headers if name.startswith(b":")}
    if b":authority" in pseudo and not any(name == b"host" for name, _ in fields):
        fields = ((b"host", pseudo[b":authority"]), *fields)
    target = pseudo.get(b":path") or pseudo[b":authority"]  # CONNECT has no :path (§8.5)
    request = Request(pseudo[b":method"], target, b"2", fields)
    limit = limits.max_body_bytes  # h2 has checked that Content-Length is a number (§8.1.1)
    if limit is not None and any(int(value) > limit for value in request.values(b"content-length")):
        raise _body_too_large(limit)
    return request


def _body_too_large(limit: int) -> HTTPRequestError:
    return HTTPRequestError(413, f"the request body is over {limit} bytes")

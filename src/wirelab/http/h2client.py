"""One HTTP/2 client connection to an upstream, shared by every request that goes there.

Theory of operation: the `h2` library holds the protocol (frames, HPACK, stream states, flow
control windows); a `_Connection` drives it over asyncio streams. Its reader task feeds what the
upstream sends into h2 and routes the events to per-stream inboxes; everything h2 has to send is
written out after each step. A request is one stream: its head is sent at once, its body by a task
that sends only what the stream's and the connection's windows allow and waits for WINDOW_UPDATE
otherwise, and its response is read from the inbox. Received DATA is acknowledged (a WINDOW_UPDATE)
when the caller takes it, not when it arrives, so a slow client slows the upstream down through
flow control instead of filling our memory.

Streams are opened only while fewer than the upstream's SETTINGS_MAX_CONCURRENT_STREAMS are open;
later requests wait for one to close. A connection is used once the upstream's first SETTINGS came
(which also proves it speaks HTTP/2), and is replaced lazily, by the next request, once it is lost
or the upstream sent GOAWAY. (RFC 9113 §6.8 lets the streams GOAWAY still covers finish, but h2
closes the connection on GOAWAY, so they fail as possibly processed: see `_goaway`.)

Failures are exceptions (all `UpstreamError`), which say whether the upstream certainly did not
process the request, so that even a non-idempotent one may be sent again (RFC 9113 §8.7): a
connection that could not be opened, RST_STREAM with REFUSED_STREAM, and streams above GOAWAY's
last stream id.

Two hooks let a client that teaches (`wirelab fetch`) watch the connection without a second driver:
`dial` opens the byte stream (timing its steps, metering its bytes) instead of
`asyncio.open_connection`, and `tap` sees every byte h2 writes and reads, to show the frames.

    UpstreamError           .unprocessed: safe to send again whatever the method
    ├── UpstreamUnreachable the connection could not be opened (TCP, TLS, ALPN, no HTTP/2)
    ├── UpstreamTimeout     no connection, response head or body data within the timeout
    ├── StreamReset         RST_STREAM; carries the error code
    └── ConnectionLost      GOAWAY or the connection closed under the stream
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from wirelab.errors import ConfigError, WirelabError
from wirelab.http.downstream import Downstream

__all__ = [
    "ConnectionLost",
    "Dial",
    "H2Upstream",
    "Headers",
    "Origin",
    "Response",
    "StreamReset",
    "Tap",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "relay",
]

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
Trailers = Callable[[], Sequence[tuple[bytes, bytes]]]
"""Asked once the request body has been read: the trailer fields to send after it."""
RECV_BYTES = 64 << 10
STREAM_WINDOW = 1 << 20
"""Bytes of one response the upstream may send ahead of what we relayed."""
CONNECTION_WINDOW = 16 << 20
"""The same for all responses on the connection together."""
Tap = Callable[[bytes, bool], None]
"""Shown every byte of a connection: (data, sent), sent False for what was received."""


class UpstreamError(WirelabError):
    def __init__(self, detail: str, *, unprocessed: bool = False) -> None:
        super().__init__(detail)
        self.unprocessed = unprocessed


class UpstreamUnreachable(UpstreamError):
    pass


class UpstreamTimeout(UpstreamError):
    pass


class StreamReset(UpstreamError):
    def __init__(self, code: int) -> None:
        refused = code == ErrorCodes.REFUSED_STREAM
        super().__init__(f"the upstream reset the stream ({_code_name(code)})", unprocessed=refused)
        self.code = code


class ConnectionLost(UpstreamError):
    pass


class _ClientFailed(UpstreamError):
    """Our client's side of the request failed (its body stopped early): carries the client's error."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _code_name(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Origin:
        """`http://host:port` (h2c with prior knowledge) or `https://host:port` (TLS, ALPN h2)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as error:
            raise ConfigError(f"upstream: {url!r} is not a URL: {error}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"upstream: {url!r} must be http://HOST:PORT or https://HOST:PORT")
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username is not None:
            raise ConfigError(f"upstream: {url!r} must name only a scheme, host and port")
        return cls(parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))

    @property
    def authority(self) -> bytes:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return (host if self.port == default else f"{host}:{self.port}").encode()

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority.decode()}"


class _Stream:
    """One request's stream: what the reader task routed to it, waiting for the caller."""

    def __init__(self, stream_id: int) -> None:
        self.id = stream_id
        self.inbox: asyncio.Queue[h2.events.Event | UpstreamError] = asyncio.Queue()
        self.window = asyncio.Event()
        self.failed: UpstreamError | None = None

    def fail(self, error: UpstreamError) -> None:
        if self.failed is None:
            self.failed = error
            self.inbox.put_nowait(error)
            self.window.set()


class _Connection:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str, tap: Tap | None = None
    ) -> None:
        self.name = name
        self._reader = reader
        self._writer = writer
        self._tap = tap
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self.streams: dict[int, _Stream] = {}
        self.lost: UpstreamError | None = None
        self.going_away = False
        self._closed = False
        self._settled = asyncio.Event()
        self._room = asyncio.Event()
        self._flush()
        self.reading = asyncio.create_task(self._read())

    @property
    def usable(self) -> bool:
        return self.lost is None and not self.going_away

    async def wait_settled(self) -> None:
        """Until the upstream's first SETTINGS: only then are its limits known."""
        await self._settled.wait()
        if self.lost is not None:
            raise UpstreamUnreachable(f"{self.name} did not speak HTTP/2: {self.lost}", unprocessed=True)

    async def open_stream(self, headers: Headers, *, end_stream: bool) -> _Stream | None:
        """A new stream with its head sent, once the upstream allows another; None if this connection
        became unusable meanwhile (nothing was sent: try another)."""
        while (
            self.usable and self.h2.open_outbound_streams >= self.h2.remote_settings.max_concurrent_streams
        ):
            self._room.clear()
            await self._room.wait()
        if not self.usable:
            return None
        stream = _Stream(self.h2.get_next_available_stream_id())
        try:
            self.h2.send_headers(stream.id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as error:
            raise UpstreamError(f"the request cannot be sent over HTTP/2: {error}") from None
        self.streams[stream.id] = stream
        self._flush()
        return stream

    async def send_body(self, stream: _Stream, body: AsyncIterable[bytes], trailers: Trailers) -> bool:
        """Send the body as the windows allow, then the trailer fields `trailers` gives once the body
        is read, in the HEADERS frame that ends the stream; True once all of it went. A failure of
        the client's side ends the stream (CANCEL) and reaches the response's reader; the upstream's
        is theirs."""
        try:
            async for data in body:
                await self._send_data(stream, memoryview(data))
            fields = trailers()
            if fields:
                self.h2.send_headers(stream.id, fields, end_stream=True)
            else:
                self.h2.end_stream(stream.id)
            self._flush()
            return True
        except (h2.exceptions.ProtocolError, UpstreamError):
            return False  # the stream or connection ended: its reader hears why
        except Exception as error:
            stream.fail(_ClientFailed(error))
            self._cancel(stream)
            return False

    async def _send_data(self, stream: _Stream, data: memoryview) -> None:
        while data:
            while (window := self._window(stream)) <= 0:
                stream.window.clear()
                await stream.window.wait()
            self.h2.send_data(stream.id, data[:window].tobytes())
            data = data[window:]
            self._flush()
            try:
                await self._writer.drain()
            except OSError as error:
                raise ConnectionLost(f"{self.name}: {error}") from None

    def _window(self, stream: _Stream) -> int:
        if stream.failed is not None:
            raise stream.failed
        window = self.h2.local_flow_control_window(stream.id)
        return min(window, self.h2.max_outbound_frame_size)

    def acknowledge(self, event: h2.events.DataReceived) -> None:
        """Open the windows again by what the caller took (no-op once the connection is closed)."""
        if event.flow_controlled_length:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self._flush()

    def forget(self, stream: _Stream, *, ended: bool) -> None:
        """The caller is done with the stream: cancel it unless it `ended` both ways, give back its
        window."""
        if self.streams.pop(stream.id, None) is None:
            return
        if self.lost is None and not ended:
            self._cancel(stream)
            while not stream.inbox.empty():
                if isinstance(event := stream.inbox.get_nowait(), h2.events.DataReceived):
                    self.acknowledge(event)
        self._room.set()
        if self.going_away and not self.streams:
            self.close()

    def _cancel(self, stream: _Stream) -> None:
        """RST_STREAM with CANCEL, unless the stream is closed already."""
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream.id, ErrorCodes.CANCEL)
        self._flush()

    def close(self) -> None:
        """Say GOAWAY if we still can, and close: the reader task then fails what is left."""
        self._closed = True
        if self.lost is None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
            self._flush()
        self._writer.close()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self._writer.is_closing():
            if self._tap is not None:
                self._tap(data, True)
            self._writer.write(data)

    async def _read(self) -> None:
        lost: UpstreamError | None = None
        try:
            while data := await self._reader.read(RECV_BYTES):
                if self._tap is not None:
                    self._tap(data, False)
                for event in self.h2.receive_data(data):
                    self._on(event)
                self._flush()
        except h2.exceptions.ProtocolError as error:
            self._flush()  # h2's GOAWAY, saying why
            lost = ConnectionLost(f"{self.name} broke HTTP/2: {error}")
        except OSError as error:
            lost = ConnectionLost(f"{self.name}: {error}")
        finally:
            closer = "we" if self._closed else "the upstream"
            self._lose(lost or ConnectionLost(f"{self.name}: {closer} closed the connection"))

    def _lose(self, error: UpstreamError) -> None:
        self.lost = error
        for stream in self.streams.values():
            stream.fail(error)
        self._settled.set()
        self._room.set()
        self._writer.close()
        log.info("upstream connection %s ended: %s", self.name, error)

    def _on(self, event: h2.events.Event) -> None:
        match event:
            case (
                h2.events.ResponseReceived()
                | h2.events.DataReceived()
                | h2.events.TrailersReceived()
                | h2.events.StreamEnded()
            ):
                self._route(event.stream_id, event)
            case h2.events.StreamReset():
                if stream := self.streams.get(event.stream_id):
                    stream.fail(StreamReset(int(event.error_code)))
                self._room.set()
            case h2.events.WindowUpdated():
                targets = (
                    self.streams.values() if event.stream_id == 0 else [self.streams.get(event.stream_id)]
                )
                for stream in targets:
                    if stream is not None:
                        stream.window.set()
            case h2.events.RemoteSettingsChanged():
                self._settled.set()
                self._room.set()
                for stream in self.streams.values():
                    stream.window.set()
            case h2.events.ConnectionTerminated():
                self._goaway(event.last_stream_id or 0, int(event.error_code or 0))

    def _route(self, stream_id: int, event: h2.events.Event) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.inbox.put_nowait(event)
        elif isinstance(event, h2.events.DataReceived):
            self.acknowledge(event)  # for a stream we gave up: keep the connection's window open
        if isinstance(event, h2.events.StreamEnded):
            self._room.set()

    def _goaway(self, last_stream_id: int, code: int) -> None:
        """GOAWAY: streams above `last_stream_id` were never processed. Those below might finish here
        by RFC 9113 §6.8, but h2 takes GOAWAY as the end of the connection (python-hyper/h2#1181)
        and refuses their frames, so they fail too, as possibly processed."""
        self.going_away = True
        name = _code_name(code)
        for stream in self.streams.values():
            unprocessed = stream.id > last_stream_id
            detail = "never processed" if unprocessed else "cut short"
            stream.fail(
                ConnectionLost(f"{self.name} sent GOAWAY ({name}): {detail}", unprocessed=unprocessed)
            )
        log.info("upstream connection %s: GOAWAY (%s, last stream %d)", self.name, name, last_stream_id)
        self.close()


class Response:
    """The upstream's answer: its head at once, its body by iterating (each piece within the timeout),
    then its `trailers` (none until the body has been read). `aclose` cancels the stream if it is
    still open."""

    def __init__(
        self, connection: _Connection, stream: _Stream, sender: asyncio.Task[bool] | None, timeout: float
    ) -> None:
        self._connection = connection
        self._stream = stream
        self._sender = sender
        self._timeout = timeout
        self.status = 0
        self.headers: Headers = []
        self.trailers: Headers = []
        self.complete = False
        """Whether the whole body arrived."""

    @property
    def buffered(self) -> bool:
        """Whether more of the response has arrived already: flush the client's side only when not."""
        return not self._stream.inbox.empty()

    @property
    def body_sent(self) -> bool:
        """Whether the upstream took the whole request body (True when there was none)."""
        sender = self._sender
        return sender is None or (sender.done() and not sender.cancelled() and sender.result())

    async def _start(self) -> None:
        while not self.status:
            event = await self._next()
            if isinstance(event, h2.events.ResponseReceived):
                fields = [(bytes(name), bytes(value)) for name, value in event.headers]
                status = next(value for name, value in fields if name == b":status")
                if not status.startswith(b"1"):  # informational answers are not relayed
                    self.status = int(status)
                    self.headers = [(name, value) for name, value in fields if not name.startswith(b":")]
            elif isinstance(event, h2.events.StreamEnded):
                raise ConnectionLost("the upstream ended the stream without a response")

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        while not self.complete:
            event = await self._next()
            if isinstance(event, h2.events.DataReceived):
                self._connection.acknowledge(event)
                if event.data:
                    return event.data
            elif isinstance(event, h2.events.TrailersReceived):
                self.trailers = [(bytes(name), bytes(value)) for name, value in event.headers]
            elif isinstance(event, h2.events.StreamEnded):
                self.complete = True
        raise StopAsyncIteration

    async def _next(self) -> h2.events.Event:
        inbox = self._stream.inbox
        if not inbox.empty():  # what one read brought (head, data, end) needs no timer
            event = inbox.get_nowait()
        else:
            try:
                async with asyncio.timeout(self._timeout):
                    event = await inbox.get()
            except TimeoutError:
                raise UpstreamTimeout(f"the upstream sent nothing for {self._timeout}s") from None
        if isinstance(event, _ClientFailed):
            raise event.error
        if isinstance(event, UpstreamError):
            raise event
        return event

    async def aclose(self) -> None:
        """Cancel the stream if the body did not end, and stop sending the request body."""
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
        self._connection.forget(self._stream, ended=self.complete and self.body_sent)


Dial = Callable[
    ["Origin", ssl.SSLContext | None], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
]
"""Opens the byte stream of a new connection to the origin (TCP, then TLS given a context)."""


async def _open_connection(
    origin: Origin, ssl_context: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    server_hostname = origin.host if ssl_context else None
    return await asyncio.open_connection(
        origin.host, origin.port, ssl=ssl_context, server_hostname=server_hostname
    )


class H2Upstream:
    """Up to `connections` HTTP/2 connections to `origin`, opened when first needed and again after
    one is lost; requests take them in turn. `dial` and `tap`: see the module's docstring."""

    def __init__(
        self,
        origin: Origin,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connections: int = 1,
        connect_timeout: float = 5.0,
        timeout: float = 30.0,
        dial: Dial = _open_connection,
        tap: Tap | None = None,
    ) -> None:
        if (origin.scheme == "https") != (ssl_context is not None):
            raise ConfigError("upstream: https:// needs a TLS context, and http:// takes none")
        self.origin = origin
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._dial = dial
        self._tap = tap
        self.opened = 0
        """Connections opened so far."""
        self._slots: list[_Connection | None] = [None] * connections
        self._locks = [asyncio.Lock() for _ in range(connections)]
        self._turn = itertools.cycle(range(connections))
        self._all: set[_Connection] = set()

    async def send(
        self,
        method: bytes,
        path: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: AsyncIterable[bytes] | None,
        *,
        authority: bytes | None = None,
        trailers: Trailers = list,
    ) -> Response:
        """Send a request (its body streamed, if any, then `trailers()`) and return once the response
        head arrived; the caller must `aclose()` the response."""
        pseudo = [
            (b":method", method),
            (b":scheme", self.origin.scheme.encode()),
            (b":authority", authority or self.origin.authority),
            (b":path", path),
        ]
        try:
            async with asyncio.timeout(self.timeout):
                connection, stream = await self._open_stream([*pseudo, *headers], end_stream=body is None)
        except TimeoutError:  # the head was not sent: the request may go again
            raise UpstreamTimeout(
                f"no stream to {self.origin} within {self.timeout}s", unprocessed=True
            ) from None
        sender = None if body is None else asyncio.create_task(connection.send_body(stream, body, trailers))
        response = Response(connection, stream, sender, self.timeout)
        try:
            await response._start()
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _open_stream(self, headers: Headers, *, end_stream: bool) -> tuple[_Connection, _Stream]:
        while True:
            connection = await self._connection()
            stream = await connection.open_stream(headers, end_stream=end_stream)
            if stream is not None:
                return connection, stream

    async def _connection(self) -> _Connection:
        slot = next(self._turn)
        async with self._locks[slot]:
            connection = self._slots[slot]
            if connection is None or not connection.usable:
                connection = self._slots[slot] = await self._connect()
            return connection

    async def _connect(self) -> _Connection:
        origin = self.origin
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await self._dial(origin, self.ssl_context)
                connection = _Connection(reader, writer, f"{origin} #{self.opened + 1}", self._tap)
                self._all.add(connection)
                connection.reading.add_done_callback(lambda _: self._all.discard(connection))
                try:
                    self._check_alpn(writer)
                    await connection.wait_settled()
                except BaseException:
                    connection.close()
                    raise
        except TimeoutError:
            raise UpstreamTimeout(
                f"{origin} did not accept HTTP/2 within {self.connect_timeout}s", unprocessed=True
            ) from None
        except (OSError, ssl.SSLError) as error:
            raise UpstreamUnreachable(f"cannot connect to {origin}: {error}", unprocessed=True) from None
        self.opened += 1
        log.info("upstream connection %s open", connection.name)
        return connection

    def _check_alpn(self, writer: asyncio.StreamWriter) -> None:
        tls = writer.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() != "h2":
            raise UpstreamUnreachable(
                f"{self.origin} did not agree to HTTP/2 over TLS (ALPN: {tls.selected_alpn_protocol()})",
                unprocessed=True,
            )

    async def aclose(self) -> None:
        """GOAWAY on every connection, and wait for their reader tasks to end."""
        connections = list(self._all)
        for connection in connections:
            connection.close()
        await asyncio.gather(*(c.reading for c in connections), return_exceptions=True)


async def relay(response: Response, downstream: Downstream, added: Headers) -> bool:
    """The upstream's answer to a client: its head with the `added` fields, its body as it comes (each
    piece flushed once nothing more is buffered, so events go one by one), then its trailers. True if
    the client's connection may carry another request; False too when the upstream answered before
    taking the whole request body, whose rest is then unread. An `UpstreamError` can only cut the
    response short once its head has gone."""
    await downstream.respond(response.status, _reason(response.status), [*response.headers, *added])
    async for data in response:
        await downstream.send(data)
        if not response.buffered:
            await downstream.flush()
    keep = await downstream.finish(response.trailers)
    return keep and response.body_sent


def _reason(status: int) -> bytes:
    """HTTP/2 has no reason phrase (RFC 9113 §8.3.2); an HTTP/1.1 client gets the usual one."""
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""

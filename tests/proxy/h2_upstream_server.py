"""A small HTTP/2 (h2c, prior knowledge) server over the h2 library, for what nginx cannot be told to do.

Theory of operation: one task reads each connection and feeds h2; each stream gets a task running the
behaviour its path names, the first time and every time after (`hits` counts per path):

    /echo     the request body streamed back as it arrives, within both flow control windows; inbound
              DATA is acknowledged only once echoed, so a slow reader slows the writer (no length)
    /flaky    503 the first time, then 200
    /refuse   RST_STREAM REFUSED_STREAM the first time, then 200
    /goaway   GOAWAY whose last stream id is below this stream (it was not processed) the first time
    /reset    abort the connection (no answer) the first time, then 200
    /bye      200, then GOAWAY and close the connection
    /cut      a head promising 100 bytes, 10 of them, then RST_STREAM INTERNAL_ERROR
    /slow     200 after `slow_s`
    anything  200 with JSON: method, path, authority, the fields seen and the connection number

`max_streams` is announced as SETTINGS_MAX_CONCURRENT_STREAMS; `peak_streams` is the most seen at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame


class _Stream:
    def __init__(self, stream_id: int, headers: dict[str, str]) -> None:
        self.id = stream_id
        self.headers = headers
        self.body: asyncio.Queue[h2.events.DataReceived | None] = asyncio.Queue()
        self.trailers: dict[str, str] = {}
        self.window = asyncio.Event()


class _Connection:
    def __init__(
        self, server: H2TestServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.number = server.connections
        self.reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: server.max_streams},
        )
        self.streams: dict[int, _Stream] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.closing = False

    def flush(self) -> None:
        if data := self.h2.data_to_send():
            self.writer.write(data)

    async def run(self) -> None:
        self.h2.initiate_connection()
        self.flush()
        try:
            while data := await self.reader.read(65536):
                for event in self.h2.receive_data(data):
                    self.on(event)
                self.flush()
        except (OSError, h2.exceptions.ProtocolError):
            pass
        finally:
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)
            self.writer.close()

    def on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = {str(k): str(v) for k, v in event.headers}
            stream = self.streams[event.stream_id] = _Stream(event.stream_id, headers)
            self.server.active += 1
            self.server.peak_streams = max(self.server.peak_streams, self.server.active)
            task = asyncio.create_task(self.serve(stream))
            self.tasks[stream.id] = task
            task.add_done_callback(lambda _: self.done(stream))
        elif isinstance(event, h2.events.DataReceived) and event.stream_id in self.streams:
            self.streams[event.stream_id].body.put_nowait(event)
        elif isinstance(event, h2.events.TrailersReceived) and event.stream_id in self.streams:
            self.streams[event.stream_id].trailers = {str(k): str(v) for k, v in event.headers}
        elif isinstance(event, h2.events.StreamEnded) and event.stream_id in self.streams:
            self.streams[event.stream_id].body.put_nowait(None)
        elif isinstance(event, h2.events.StreamReset) and event.stream_id in self.tasks:
            self.tasks[event.stream_id].cancel()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            for stream in self.streams.values():
                stream.window.set()

    def done(self, stream: _Stream) -> None:
        self.server.active -= 1
        self.streams.pop(stream.id, None)
        self.tasks.pop(stream.id, None)

    async def serve(self, stream: _Stream) -> None:
        path = stream.headers[":path"]
        self.server.hits[path] += 1
        first = self.server.hits[path] == 1
        self.server.seen.append((self.number, stream.headers))
        if path == "/echo":
            await self.echo(stream)
        elif path == "/flaky" and first:
            await self.read_body(stream)
            self.answer(stream, 503, b"try again\n")
        elif path == "/refuse" and first:
            self.h2.reset_stream(stream.id, ErrorCodes.REFUSED_STREAM)
            self.flush()
        elif path == "/goaway" and first:
            # Written past h2, which would refuse to finish the earlier streams after its own GOAWAY.
            goaway = GoAwayFrame(0, last_stream_id=max(stream.id - 2, 0), error_code=ErrorCodes.NO_ERROR)
            self.writer.write(goaway.serialize())
            self.closing = True
        elif path == "/reset" and first:
            self.writer.transport.abort()
        elif path == "/cut":
            self.h2.send_headers(stream.id, [(":status", "200"), ("content-length", "100")])
            self.h2.send_data(stream.id, b"x" * 10)
            self.flush()
            await asyncio.sleep(0.1)  # the head and the first bytes reach the client
            self.h2.reset_stream(stream.id, ErrorCodes.INTERNAL_ERROR)
            self.flush()
        elif path == "/trailers":
            self.h2.send_headers(stream.id, [(":status", "200")])
            self.h2.send_data(stream.id, b"body before the trailers")
            self.h2.send_headers(
                stream.id, [("grpc-status", "0"), ("grpc-message", "all good")], end_stream=True
            )
            self.flush()
        elif path == "/slow":
            await asyncio.sleep(self.server.slow_s)
            self.answer(stream, 200, b"slow\n")
        else:
            await self.read_body(stream)
            seen = {"connection": self.number, "headers": stream.headers, "trailers": stream.trailers}
            self.answer(stream, 200, json.dumps(seen).encode(), ("content-type", "application/json"))
            if path == "/bye":
                self.h2.close_connection()
                self.flush()
                self.writer.close()
        if self.closing and len(self.streams) <= 1:
            self.writer.close()

    async def read_body(self, stream: _Stream) -> None:
        while (event := await stream.body.get()) is not None:
            self.h2.acknowledge_received_data(event.flow_controlled_length, stream.id)
            self.flush()

    def answer(self, stream: _Stream, status: int, body: bytes, *fields: tuple[str, str]) -> None:
        headers = [(":status", str(status)), ("content-length", str(len(body))), *fields]
        self.h2.send_headers(stream.id, headers)
        self.h2.send_data(stream.id, body, end_stream=True)
        self.flush()

    async def echo(self, stream: _Stream) -> None:
        self.h2.send_headers(stream.id, [(":status", "200")])
        while (event := await stream.body.get()) is not None:
            data = memoryview(event.data)
            while data:
                while (window := self.h2.local_flow_control_window(stream.id)) <= 0:
                    stream.window.clear()
                    await stream.window.wait()
                size = min(window, self.h2.max_outbound_frame_size)
                self.h2.send_data(stream.id, data[:size].tobytes())
                data = data[size:]
                self.flush()
                await self.writer.drain()
            self.h2.acknowledge_received_data(event.flow_controlled_length, stream.id)
            self.flush()
        self.h2.end_stream(stream.id)
        self.flush()


class H2TestServer:
    def __init__(self, *, max_streams: int = 100, slow_s: float = 1.0) -> None:
        self.max_streams = max_streams
        self.slow_s = slow_s
        self.hits: Counter[str] = Counter()
        self.seen: list[tuple[int, dict[str, str]]] = []
        """(connection number, request fields) of every stream, in arrival order."""
        self.connections = 0
        self.active = 0
        self.peak_streams = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> H2TestServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()  # each connection's task then ends by itself
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await _Connection(self, reader, writer).run()
        finally:
            self._writers.discard(writer)

"""`wirelab fetch` over HTTP/2: the lab's HTTP/2 client (`wirelab.http.h2client`) on one connection,
over TLS (ALPN h2) or in clear with prior knowledge (h2c), every request a stream of it.

Theory of operation: the session is an `H2Upstream` limited to one connection, opened by our
`Dialer` (so its steps are timed and its bytes metered like HTTP/1's) and watched through the
upstream's tap: a `FrameTap` per direction cuts the bytes into frames (hyperframe, h2's own framing
layer) and describes each one, decoding header blocks with an HPACK decoder of its own that sees the
same blocks in the same order as the real one, so its dynamic table stays in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Iterator

import hpack
import hyperframe.frame
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from wirelab.clients.wire import (
    REQUEST_FIELDS,
    Body,
    ConnectionStats,
    Dialed,
    Dialer,
    Exchange,
    FetchError,
    gather_or_cancel,
    text_fields,
)
from wirelab.http.h2client import H2Upstream, Origin, UpstreamError

__all__ = ["FrameTap", "H2Session"]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADER_BYTES = 9
_TYPES = {
    0x0: "DATA",
    0x1: "HEADERS",
    0x2: "PRIORITY",
    0x3: "RST_STREAM",
    0x4: "SETTINGS",
    0x5: "PUSH_PROMISE",
    0x6: "PING",
    0x7: "GOAWAY",
    0x8: "WINDOW_UPDATE",
    0x9: "CONTINUATION",
}


class FrameTap:
    """One direction of an HTTP/2 connection, described frame by frame: `feed` bytes as they pass,
    get a line per frame they completed. `client` is the client's side, which starts with the
    connection preface."""

    def __init__(self, *, client: bool) -> None:
        self._buffer = bytearray()
        self._preface = len(PREFACE) if client else 0
        self._decoder = hpack.Decoder()
        self._block = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buffer += data
        lines = []
        if self._preface:
            if len(self._buffer) < self._preface:
                return []
            del self._buffer[: self._preface]
            self._preface = 0
            lines.append("connection preface (PRI * HTTP/2.0)")
        while len(self._buffer) >= _HEADER_BYTES:
            frame, length = hyperframe.frame.Frame.parse_frame_header(
                memoryview(self._buffer[:_HEADER_BYTES])
            )
            if len(self._buffer) < _HEADER_BYTES + length:
                break
            frame.parse_body(memoryview(self._buffer[_HEADER_BYTES : _HEADER_BYTES + length]))
            del self._buffer[: _HEADER_BYTES + length]
            lines.append(self._describe(frame, length))
        return lines

    def _describe(self, frame: hyperframe.frame.Frame, length: int) -> str:
        kind = frame.type if frame.type is not None else -1
        name = _TYPES.get(kind, f"type {kind:#x}")
        flags = f" [{', '.join(sorted(frame.flags))}]" if frame.flags else ""
        detail = self._detail(frame)
        return f"{name} stream {frame.stream_id}{flags} len {length}" + (f": {detail}" if detail else "")

    def _detail(self, frame: hyperframe.frame.Frame) -> str:
        match frame:
            case hyperframe.frame.SettingsFrame():
                return ", ".join(f"{_setting(code)}={value}" for code, value in frame.settings.items())
            case hyperframe.frame.WindowUpdateFrame():
                return f"window +{frame.window_increment:,}"
            case hyperframe.frame.HeadersFrame() | hyperframe.frame.ContinuationFrame():
                return self._headers(frame.data, "END_HEADERS" in frame.flags)
            case hyperframe.frame.RstStreamFrame():
                return _error(frame.error_code)
            case hyperframe.frame.GoAwayFrame():
                return f"last stream {frame.last_stream_id}, {_error(frame.error_code)}"
            case hyperframe.frame.PingFrame():
                return f"opaque {frame.opaque_data.hex()}"
        return ""

    def _headers(self, fragment: bytes, ended: bool) -> str:
        """The header block's fields once its last fragment came (HPACK-decoded, RFC 7541)."""
        self._block += fragment
        if not ended:
            return "(header block continues)"
        block, self._block = bytes(self._block), bytearray()
        try:
            fields = self._decoder.decode(block, raw=True)
        except hpack.HPACKError as error:
            return f"(HPACK: {error})"
        return ", ".join(f"{bytes(n).decode('latin-1')}: {bytes(v).decode('latin-1')}" for n, v in fields)


def _setting(code: int) -> str:
    try:
        return SettingCodes(code).name
    except ValueError:
        return f"0x{code:x}"


def _error(code: int) -> str:
    try:
        return ErrorCodes(code).name
    except ValueError:
        return f"error 0x{code:x}"


class H2Session:
    """Every request as a stream of one HTTP/2 connection to the dialer's target."""

    def __init__(self, dialer: Dialer) -> None:
        target = dialer.target
        self.dialer = dialer
        self._dialed: list[Dialed] = []
        self._requests = 0
        traced = dialer.recorder.tracer is not None
        self._taps = {True: FrameTap(client=True), False: FrameTap(client=False)}
        self._upstream = H2Upstream(
            Origin(target.scheme, target.host, target.port),
            ssl_context=dialer.ssl_context,
            connect_timeout=dialer.within_s,
            timeout=dialer.within_s,
            dial=self._dial,
            tap=self._tap if traced else None,
        )

    async def _dial(
        self, origin: Origin, ssl_context: ssl.SSLContext | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer, dialed = await self.dialer.dial(len(self._dialed) + 1)
        self._dialed.append(dialed)
        return reader, writer

    def _tap(self, data: bytes, sent: bool) -> None:
        for line in self._taps[sent].feed(data):
            self.dialer.recorder.trace(len(self._dialed), "send" if sent else "recv", line)

    async def get(self, path: str, *, keep: bool = False) -> Exchange:
        recorder = self.dialer.recorder
        with _translated():
            started = recorder.ms()
            response = await self._upstream.send(b"GET", path.encode(), REQUEST_FIELDS, None)
            self._requests += 1
            first_byte = recorder.ms()
            body = Body(keep=keep)
            try:
                async for data in response:
                    body.add(data)
            finally:
                await response.aclose()
        fields = text_fields(response.headers)
        return Exchange(
            path,
            response.status,
            fields,
            body.size,
            body.sha256,
            1,
            started,
            first_byte,
            recorder.ms(),
            body.data,
        )

    async def get_all(self, paths: list[str]) -> list[Exchange]:
        """Every path at once, each a stream of the one connection (as many open as the server allows)."""
        return await gather_or_cancel(self.get(path) for path in paths)

    async def aclose(self) -> list[ConnectionStats]:
        protocol = "h2" if self.dialer.ssl_context is not None else "h2c"
        stats = [dialed.stats(protocol, self._requests) for dialed in self._dialed]
        await self._upstream.aclose()
        return stats


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """The HTTP/2 client's errors as the fetch's."""
    try:
        yield
    except UpstreamError as error:
        raise FetchError(str(error)) from None

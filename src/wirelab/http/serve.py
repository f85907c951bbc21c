"""Run an ASGI application: on uvicorn for HTTP/1.1 alone (`serve`); on hypercorn for HTTP/1.1 and
HTTP/2, with `h3server` for HTTP/3, when more versions are asked for (`serve_versions`).

uvicorn is the default: HTTP/1.1 with httptools under our connection limits (`guard`), WebSocket with
websockets' sans-I/O core (extended in `wsprotocol`); it is the fastest of the two at HTTP/1.1 and
the one the hostile-client defences are built into. It speaks no HTTP/2 or HTTP/3, so when those are
asked for, hypercorn serves HTTP/1.1 (h11) and HTTP/2 (h2, over TLS with ALPN and as h2c on the clear
port, WebSocket over HTTP/2 by RFC 8441's extended CONNECT) to the same ASGI application, and
`h3server` (ours, on aioquic: hypercorn's own QUIC listener drops datagrams past a queue of ten) serves
HTTP/3 on the UDP port of the TLS port's number, advertised by Alt-Svc. hypercorn's own limits apply
there (h11's head size, h2's stream and header-list caps, the keep-alive timeout), not `guard`'s,
with two additions: a request head over `limits.max_head_bytes` is refused 431 with an RFC 9457
problem document, as `guard` refuses it, in every version where a response can still be sent
(`_bounded_heads`, `_ProblemH11Protocol`, `_DecodingH2Protocol`), and an HTTP/2 frame over the size
limit is refused from its header, before its payload is read.

Either way, on SIGINT or SIGTERM the application is first told to begin shutting down (so streams end
now instead of when the grace period runs out), then the server drains connections, and a graceful
stop exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Collection, Generator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import h11
import uvicorn
from h2.frame_buffer import FrameBuffer
from hypercorn.protocol.h2 import H2Protocol
from hypercorn.protocol.h11 import H11Protocol
from hyperframe.frame import Frame

from wirelab.http.guard import ConnectionLimits, Guard
from wirelab.http.h3server import serve_h3
from wirelab.http.problem import problem_document
from wirelab.net.loop import runner
from wirelab.net.tls import CIPHERS

__all__ = ["VERSIONS", "serve", "serve_versions"]

VERSIONS = ("1.1", "2", "3")
"""What `serve_versions` can speak (HTTP/1.0 requests are answered wherever HTTP/1.1 is)."""
_GRACE_S = 10
_H2_DECODED_HEADS = 4
"""How many times `max_head_bytes` an HTTP/2 header list may be and still be decoded, so that it can
be answered 431 (see `serve_versions`)."""


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, on_stop: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_stop = on_stop

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def _stop(self, sig: int) -> None:
        if self.should_exit:  # a second Ctrl-C: stop waiting for connections
            self.force_exit = True
            return
        self._on_stop()
        self.should_exit = True


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    on_stop: Callable[[], None],
    ws_max_size: int,
    limits: ConnectionLimits,
    access_log: bool,
    log_level: str,
) -> None:
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="auto",
        http=Guard(limits).protocol_factory(),
        timeout_keep_alive=limits.idle_timeout_s,
        ws="wirelab.http.wsprotocol:PushWebSocketProtocol",
        ws_max_size=ws_max_size,
        interface="asgi3",  # said, not detected: the app's __call__ returns an awaitable (app.server)
        lifespan="on",
        access_log=access_log,
        log_level=log_level,
        timeout_graceful_shutdown=10,
        server_header=False,
    )
    _Server(config, on_stop).run()


def serve_versions(
    app: Any,
    *,
    host: str,
    port: int,
    tls_port: int,
    versions: Collection[str],
    certificate: tuple[Path, Path],
    on_stop: Callable[[], None],
    ws_max_size: int,
    limits: ConnectionLimits,
    access_log: bool,
    log_level: str,
) -> None:
    """Serve `versions` (some of VERSIONS) with hypercorn: HTTP/1.1 and h2c on `port` in the clear,
    HTTP/1.1 and HTTP/2 over TLS on TCP `tls_port` (ALPN picks), HTTP/3 on UDP `tls_port`."""
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    cert, key = certificate
    config = Config()
    config.insecure_bind = [f"{host}:{port}"]
    config.bind = [f"{host}:{tls_port}"]
    config.certfile, config.keyfile = str(cert), str(key)
    config.ciphers = CIPHERS
    config.alpn_protocols = ["h2", "http/1.1"] if "2" in versions else ["http/1.1"]
    if "3" in versions:
        config.alt_svc_headers = [f'h3=":{tls_port}"; ma=3600']
    config.keep_alive_timeout = limits.idle_timeout_s
    config.keep_alive_max_requests = 1 << 31  # hypercorn's default (1000) closes busy HTTP/2 connections
    # h11 refuses a head over its size only while the head is incomplete: one arriving in a single
    # read of up to 64 KiB goes through, and `_bounded_heads` refuses it instead. Over HTTP/2 a header
    # list must be decoded whole to keep the HPACK state in step, or the connection is lost (h2 ends
    # it with GOAWAY ENHANCE_YOUR_CALM, and curl retries it five times before giving up): decoding up
    # to 4x the limit lets an oversize head be answered 431 on its stream, the connection kept.
    config.h11_max_incomplete_size = limits.max_head_bytes
    config.h2_max_header_list_size = limits.max_head_bytes * _H2_DECODED_HEADS
    config.websocket_max_message_size = ws_max_size
    config.graceful_timeout = _GRACE_S
    config.include_server_header = False
    config.accesslog = logging.getLogger("hypercorn.access") if access_log else None
    config.errorlog = logging.getLogger("hypercorn.error")
    logging.basicConfig(level=log_level.upper(), format="%(levelname)-8s %(name)s: %(message)s")
    logging.getLogger("quic").setLevel(logging.WARNING)  # aioquic's lines per connection drown the rest
    logging.getLogger("wirelab.h3.access").disabled = not access_log

    async def run() -> None:
        stopping = asyncio.Event()
        started = asyncio.Event()

        def stop() -> None:
            if not stopping.is_set():
                on_stop()
                stopping.set()

        async def h3_once_started() -> None:
            """HTTP/3 requests are taken once the application has started, as hypercorn's are."""
            await started.wait()
            server = await serve_h3(
                app, host=host, port=tls_port, certificate=certificate, max_head_bytes=limits.max_head_bytes
            )
            logging.getLogger("hypercorn.error").info(
                "Running on https://%s:%d (QUIC, HTTP/3)", host, tls_port
            )
            await stopping.wait()
            await server.close(_GRACE_S)

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        bounded = _bounded_heads(_signalling(app, started), limits.max_head_bytes)
        served = hypercorn_serve(bounded, config, shutdown_trigger=stopping.wait, mode="asgi")
        await asyncio.gather(served, *([h3_once_started()] if "3" in versions else []))

    _install_protocols()
    with runner() as loop_runner:
        loop_runner.run(run())


def _signalling(app: Any, started: asyncio.Event) -> Any:
    """`app`, setting `started` once its lifespan startup is complete."""

    async def signalling(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await app(scope, receive, send)  # type: ignore[no-any-return]

        async def send_and_tell(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                started.set()

        return await app(scope, receive, send_and_tell)  # type: ignore[no-any-return]

    return signalling


def _bounded_heads(app: Any, max_head_bytes: int) -> Any:
    """`app`, except that a request whose head is over `max_head_bytes` (its request line and fields,
    counted as HTTP/1.1 writes them) is answered 431 problem+json without reaching it.

    hypercorn's own caps are not this limit: h11 checks only an incomplete head, and h2 decodes more
    (see `serve_versions`), so this is where HTTP/1.1 and HTTP/2 both get the same refusal `guard`
    gives under uvicorn. A WebSocket handshake is refused the same way (ASGI's HTTP response for
    websockets), or closed (403) by a server without that extension."""

    async def bounded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket") or _head_size(scope) <= max_head_bytes:
            return await app(scope, receive, send)  # type: ignore[no-any-return]
        body = problem_document(431, f"the request head is over {max_head_bytes} bytes")
        head = [(b"content-type", b"application/problem+json"), (b"content-length", b"%d" % len(body))]
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 431, "headers": head})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": 431, "headers": head})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close"})

    return bounded


def _head_size(scope: dict[str, Any]) -> int:
    """The bytes of the request line and fields, as HTTP/1.1 frames them (": " and CRLF included)."""
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope["query_string"]) + 1
    line = len(scope.get("method", "GET")) + target + len(" HTTP/1.1\r\n")
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"]) + 2


class _ProblemH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, but its refusals before any request (400 for a malformed head,
    431 for one over `h11_max_incomplete_size`) carry an RFC 9457 problem document and a reason
    phrase, like every other refusal of ours, instead of an empty body."""

    async def _send_error_response(self, status_code: int) -> None:
        detail = {
            431: f"the request head is over {self.config.h11_max_incomplete_size} bytes",
            400: "the request is not valid HTTP/1.1",
        }.get(status_code, HTTPStatus(status_code).description)
        body = problem_document(status_code, detail)
        fields = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
            *self.config.response_headers("h11"),
        ]
        reason = HTTPStatus(status_code).phrase.encode()
        await self._send_h11_event(h11.Response(status_code=status_code, headers=fields, reason=reason))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


class _DecodingH2Protocol(H2Protocol):
    """hypercorn's HTTP/2 protocol, decoding header lists up to `h2_max_header_list_size` from the
    first request on, and refusing an overlong frame from its header.

    hypercorn sets that size in the SETTINGS it sends, but h2 applies it to its decoder only once the
    client acknowledges them, and until then stops at its own 64 KiB: a first request with a head of
    100 KiB (curl sends one before it reads our SETTINGS) would lose the connection instead of being
    answered 431. Decoding more than the client was told is safe; it only lets the refusal be an
    answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connection.decoder.max_header_list_size = self.config.h2_max_header_list_size
        self.connection.incoming_buffer = _EarlyFrameSizeCheck(server=True)


class _EarlyFrameSizeCheck(FrameBuffer):
    """h2's frame buffer, checking a frame's length as soon as its 9-byte header is in: h2 checks it
    only once the whole frame is buffered, so a header announcing 16 MiB would have the server wait
    for, and hold, 16 MiB before its FRAME_SIZE_ERROR (RFC 9113 §4.2). Reads h2's buffer (`_data`)."""

    def __next__(self) -> Frame:
        if len(self._data) >= 9:
            self._validate_frame_length(int.from_bytes(self._data[:3], "big"))
        return super().__next__()


def _install_protocols() -> None:
    """hypercorn builds its protocols by name in `hypercorn.protocol` and has no setting to choose
    others, so the names are rebound there: this process serves with hypercorn and nothing else."""
    import hypercorn.protocol

    hypercorn.protocol.H11Protocol = _ProblemH11Protocol  # type: ignore[attr-defined]
    hypercorn.protocol.H2Protocol = _DecodingH2Protocol  # type: ignore[attr-defined]

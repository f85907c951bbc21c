"""A small HTTP/3 file server on aioquic, run in the test's event loop: the peer for QUIC connection
migration, which aioquic's server follows (RFC 9000 §9: it validates the client's new address with
PATH_CHALLENGE and moves the connection there)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent


class _FileServer(QuicConnectionProtocol):
    def __init__(self, *args: Any, root: Path, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._root = root
        self._h3 = H3Connection(self._quic)

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self._h3.handle_event(event):
            if isinstance(h3_event, HeadersReceived):
                self._answer(h3_event)
        self.transmit()

    def _answer(self, request: HeadersReceived) -> None:
        path = dict(request.headers)[b":path"].decode().lstrip("/") or "index.html"
        file = self._root / path
        if not file.is_file():
            self._h3.send_headers(request.stream_id, [(b":status", b"404")], end_stream=True)
            return
        body = file.read_bytes()
        head = [(b":status", b"200"), (b"content-length", str(len(body)).encode())]
        self._h3.send_headers(request.stream_id, head)
        self._h3.send_data(request.stream_id, body, end_stream=True)


@asynccontextmanager
async def h3_file_server(root: Path, cert: Path, key: Path, port: int) -> AsyncIterator[int]:
    """Serve `root` over HTTP/3 on 127.0.0.1:`port` (UDP) until the block ends."""
    configuration = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    configuration.load_cert_chain(cert, key)
    server = await serve(
        "127.0.0.1",
        port,
        configuration=configuration,
        create_protocol=functools.partial(_FileServer, root=root),
    )
    try:
        yield port
    finally:
        server.close()

"""An HTTP forward proxy (RFC 9110 §3.7, §7.6): absolute-form requests relayed, CONNECT tunnels opened.

Theory of operation: a forward proxy acts for the client, so the client names the origin in every
request: `GET http://origin/path HTTP/1.1` is relayed to `origin`, and `CONNECT origin:443` opens a
raw TCP tunnel (which is how `https://` URLs go through it, TLS end to end). A request in origin-form
(`GET /path`) was meant for a reverse proxy or a server, and is refused with a 400 saying so.

Each client connection has a strict `RequestParser` (our smuggling defences) and, per request, a fresh
upstream connection, through which the request goes as the layer 7 balancer's do
(`wirelab.http.h1client.exchange`): the body and the response stream both ways at once, and an
origin's early `100 Continue` reaches the client. Hop-by-hop fields (RFC 9110 §7.6.1) are dropped,
`Via` is added in both directions, and the response is re-framed for the client: its Content-Length
kept, otherwise chunked for HTTP/1.1 or delimited by closing for HTTP/1.0. A tunnel is
`wirelab.net.relay_streams`, which carries a half-close across: a FIN from one side becomes a FIN to
the other, and the reverse direction keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from wirelab.http.h1client import BackendFailed, Upstream, connect, exchange, request_head
from wirelab.http.h1server import ClientConnection, GatewayError, H1Downstream, answer_requests
from wirelab.net.acceptor import Acceptor
from wirelab.net.relay import relay_streams
from wirelab.proto.balance import Backend
from wirelab.proto.forwarding import end_to_end, via
from wirelab.proto.http1 import HTTPRequestError, Limits, Request

__all__ = ["ForwardProxy", "GatewayError", "serve_forward_proxy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Origin:
    host: str
    port: int
    authority: bytes
    target: bytes


class ForwardProxy:
    """Serves client connections; `handle` owns one until it closes it."""

    def __init__(
        self, *, connect_timeout: float = 10.0, idle_timeout: float = 300.0, limits: Limits | None = None
    ) -> None:
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.limits = limits or Limits()

    async def handle(self, sock: socket.socket) -> None:
        client = await ClientConnection.accept(sock, self.limits, self.idle_timeout)
        try:
            await answer_requests(client, lambda request: self._exchange(client, request))
        finally:
            client.close()

    async def _exchange(self, client: ClientConnection, request: Request) -> bool:
        """Answer one request; True if the client connection may carry another."""
        log.info("%s %s", request.method.decode(), request.target.decode())
        if request.method == b"CONNECT":
            await self._tunnel(client, request)
            return False
        origin = _origin(request)
        upstream = await self._connect(origin.host, origin.port)
        downstream = H1Downstream(client, request, scheme="http")
        fields = [(b"host", origin.authority)]
        fields += (field for field in end_to_end(request.headers) if field[0] != b"host")
        fields += [via(request.version), (b"connection", b"close")]
        head = request_head(request, origin.target, fields, has_body=downstream.has_body)
        try:
            return await exchange(request, head, upstream, downstream, idle_timeout_s=self.idle_timeout)
        except BackendFailed as failure:
            raise GatewayError(502, f"the origin failed: {failure}") from None
        finally:
            upstream.close()

    async def _tunnel(self, client: ClientConnection, request: Request) -> None:
        host, port = _authority(request.target)
        upstream = await self._connect(host, port)
        try:
            await client.send(b"HTTP/1.1 200 Connection Established\r\nvia: 1.1 wirelab\r\n\r\n")
            if early := client.parser.trailing_data:
                upstream.writer.write(early)
            result = await relay_streams(
                (client.reader, client.writer),
                (upstream.reader, upstream.writer),
                idle_timeout=self.idle_timeout,
            )
        finally:
            upstream.close()
        log.info(
            "tunnel %s:%d %s: %d bytes up, %d down",
            host,
            port,
            result.outcome.value,
            result.forward,
            result.backward,
        )

    async def _connect(self, host: str, port: int) -> Upstream:
        try:
            return await connect(Backend(host, port), within_s=self.connect_timeout)
        except TimeoutError:
            raise GatewayError(
                504, f"{host}:{port} did not accept within {self.connect_timeout}s"
            ) from None
        except OSError as error:
            raise GatewayError(502, f"cannot connect to {host}:{port}: {error}") from None


def _origin(request: Request) -> _Origin:
    """The origin an absolute-form target names (RFC 9112 §3.2.2); anything else is not for us."""
    if not request.target.lower().startswith(b"http"):
        raise HTTPRequestError(
            400,
            "this is a forward proxy: send the absolute URL (GET http://host/path, as curl -x does) "
            "or CONNECT host:port; a request for this server itself belongs to a reverse proxy",
        )
    url = _split(request.target.decode("ascii"))
    if url.scheme.lower() != "http" or not url.hostname:
        raise HTTPRequestError(400, "only http:// URLs are forwarded; https:// goes through CONNECT")
    try:
        port = url.port or 80
    except ValueError:
        raise HTTPRequestError(400, f"bad port in {url.netloc!r}") from None
    target = (url.path or "/") + (f"?{url.query}" if url.query else "")
    return _Origin(url.hostname, port, url.netloc.rpartition("@")[2].encode(), target.encode())


def _authority(target: bytes) -> tuple[str, int]:
    """CONNECT's authority-form host:port (RFC 9110 §9.3.6), the host in brackets if IPv6."""
    url = _split("//" + target.decode("ascii"))
    try:
        port = url.port
    except ValueError:
        port = None
    if not url.hostname or not port or url.path or url.username is not None:
        raise HTTPRequestError(400, "CONNECT takes host:port")
    return url.hostname, port


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as error:  # an unbalanced [IPv6] bracket, for one
        raise HTTPRequestError(400, f"bad URL: {error}") from None


async def serve_forward_proxy(
    host: str, port: int, proxy: ForwardProxy, *, on_ready: Callable[[str, int], None] | None = None
) -> None:
    """Accept connections until cancelled; `on_ready` hears the bound address (port 0 picks one)."""
    acceptor = Acceptor(lambda sock, _peer: proxy.handle(sock), limit=lambda: sys.maxsize)
    acceptor.listen((host, port))
    try:
        if on_ready is not None:
            on_ready(*acceptor.address)
        await acceptor.run()
    finally:
        acceptor.close()
        connections = set(acceptor.connections)
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

"""An HTTP forward proxy (RFC 9110 §3.7, §7.6): absolute-form requests relayed, CONNECT tunnels opened.

Theory of operation: a forward proxy acts for the client, so the client names the origin in every
request: `GET http://origin/path HTTP/1.1` is relayed to `origin`, and `CONNECT origin:443` opens a
raw TCP tunnel (which is how `https://` URLs go through it, TLS end to end). A request in origin-form
(`GET /path`) was meant for a reverse proxy or a server, and is refused with a 400 saying so.

Each client connection has a strict `RequestParser` (our smuggling defences) and, per request, a fresh
upstream connection spoken to through h11. The request body and the response run as two tasks at
once, so bodies stream both ways with at most one read buffer in memory, and an origin's early
`100 Continue` reaches the client. Hop-by-hop fields (RFC 9110 §7.6.1) are dropped, `Via` is added in
both directions, and the response is re-framed for the client: its Content-Length kept, otherwise
chunked for HTTP/1.1 or delimited by closing for HTTP/1.0. A tunnel is `wirelab.net.relay`, which
carries a half-close across: a FIN from one side becomes a FIN to the other, and the reverse
direction keeps flowing.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import h11

from wirelab.net import relay
from wirelab.proto.http1 import HTTPRequestError, Limits, Request
from wirelab.proxy.exchange import (
    PSEUDONYM,
    RECV_BYTES,
    ClientConnection,
    GatewayError,
    answer_requests,
    end_to_end,
    persistent,
    response_head,
)

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
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = ClientConnection(sock, self.limits, self.idle_timeout)
        with sock:
            await answer_requests(
                client, client.next_event, lambda request: self._exchange(client, request)
            )

    async def _exchange(self, client: ClientConnection, request: Request) -> bool:
        """Answer one request; True if the client connection may carry another."""
        log.info("%s %s", request.method.decode(), request.target.decode())
        if request.method == b"CONNECT":
            await self._tunnel(client, request)
            return False
        origin = _origin(request)
        upstream = await self._connect(origin.host, origin.port)
        with upstream:
            return await _forward(client, request, origin, upstream)

    async def _tunnel(self, client: ClientConnection, request: Request) -> None:
        host, port = _authority(request.target)
        upstream = await self._connect(host, port)
        with upstream:
            await client.send(b"HTTP/1.1 200 Connection Established\r\nvia: 1.1 wirelab\r\n\r\n")
            if early := client.parser.trailing_data:
                await asyncio.get_running_loop().sock_sendall(upstream, early)
            result = await relay(client.sock, upstream, idle_timeout=self.idle_timeout)
            log.info(
                "tunnel %s:%d %s: %d bytes up, %d down",
                host,
                port,
                result.outcome.value,
                result.forward,
                result.backward,
            )

    async def _connect(self, host: str, port: int) -> socket.socket:
        try:
            async with asyncio.timeout(self.connect_timeout):
                return await _open_socket(host, port)
        except TimeoutError:
            raise GatewayError(
                504, f"{host}:{port} did not accept within {self.connect_timeout}s"
            ) from None
        except OSError as error:
            raise GatewayError(502, f"cannot connect to {host}:{port}: {error}") from None


async def _open_socket(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as failure:
            sock.close()
            error = failure
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error


async def _forward(
    client: ClientConnection, request: Request, origin: _Origin, upstream: socket.socket
) -> bool:
    """Relay the request's body and the origin's response at the same time; True to keep the client."""
    conn = h11.Connection(h11.CLIENT)
    await asyncio.get_running_loop().sock_sendall(upstream, conn.send(_upstream_request(request, origin)))
    response = asyncio.create_task(_relay_response(client, request, conn, upstream))
    body = asyncio.create_task(_send_body(client, conn, upstream))
    try:
        done, _ = await asyncio.wait((response, body), return_when=asyncio.FIRST_EXCEPTION)
        for task in (response, body):  # the first error wins, the origin's before the client's
            if task in done:
                task.result()
        return await response
    except h11.RemoteProtocolError as error:
        raise GatewayError(502, f"the origin broke HTTP/1.1: {error}") from None
    finally:
        response.cancel()
        body.cancel()
        await asyncio.gather(response, body, return_exceptions=True)


async def _send_body(client: ClientConnection, conn: h11.Connection, upstream: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    async for data in client.body():
        await loop.sock_sendall(upstream, conn.send(h11.Data(data=data)))
    await loop.sock_sendall(upstream, conn.send(h11.EndOfMessage()))


async def _relay_response(
    client: ClientConnection, request: Request, conn: h11.Connection, upstream: socket.socket
) -> bool:
    loop = asyncio.get_running_loop()
    chunked = close = False
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await loop.sock_recv(upstream, RECV_BYTES))
        elif isinstance(event, h11.InformationalResponse):
            if event.status_code == 100 and request.version == b"1.1":
                await client.send(b"HTTP/1.1 100 Continue\r\n\r\n")
        elif isinstance(event, h11.Response):
            head, chunked, close = response_head(request, event, keep_alive=persistent(request))
            await client.send(head)
        elif isinstance(event, h11.Data):
            await client.send(b"%x\r\n%b\r\n" % (len(event.data), event.data) if chunked else event.data)
        elif isinstance(event, h11.EndOfMessage):
            if chunked:
                await client.send(b"0\r\n\r\n")
            return not close
        else:
            raise GatewayError(502, "the origin closed before it answered")


def _upstream_request(request: Request, origin: _Origin) -> h11.Request:
    """RFC 9112 §3.2.2: Host from the URL; RFC 9110 §7.6: hop-by-hop fields dropped, Via added."""
    fields = (field for field in end_to_end(request.headers) if field[0] != b"host")
    headers = [(b"host", origin.authority), *fields]
    if request.values(b"transfer-encoding"):  # the parser admits only "chunked"; h11 re-chunks it
        headers.append((b"transfer-encoding", b"chunked"))
    headers += [(b"via", request.version + b" " + PSEUDONYM), (b"connection", b"close")]
    return h11.Request(method=request.method, target=origin.target, headers=headers)


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
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family, backlog=1024)
    listener.setblocking(False)
    connections: set[asyncio.Task[None]] = set()
    try:
        if on_ready is not None:
            on_ready(*listener.getsockname()[:2])
        while True:
            sock, _ = await loop.sock_accept(listener)
            task = asyncio.create_task(proxy.handle(sock))
            connections.add(task)
            task.add_done_callback(connections.discard)
    finally:
        listener.close()
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

"""Trailer fields relayed by the layer 7 balancer and the sidecar, over real connections: gRPC puts its
status there, so a proxy that drops them breaks every gRPC call it carries (RFC 9110 §6.5)."""

from __future__ import annotations

import asyncio
import json

from tests.http.test_h2server import run, tool
from tests.proxy.h2_upstream_server import H2TestServer
from tests.proxy.l7_backends import TRAILERS, balancer
from tests.proxy.l7_backends import running as backends
from tests.proxy.test_sidecar import running as sidecar
from wirelab.proto.http1 import Data, EndOfMessage, Response, ResponseEvent, ResponseParser

EXPECTED = tuple((name.encode(), value.encode()) for name, value in TRAILERS)


async def _get_http11(port: int, path: str) -> list[ResponseEvent]:
    """One GET over HTTP/1.1, read with our own response parser until its end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET %b HTTP/1.1\r\nHost: lab\r\nTE: trailers\r\n\r\n" % path.encode())
        parser, events = ResponseParser(), []
        while not events or not isinstance(events[-1], EndOfMessage):
            async with asyncio.timeout(10):
                events += parser.receive_data(await reader.read(65536))
        return events
    finally:
        writer.close()


def _check(events: list[ResponseEvent]) -> None:
    head = events[0]
    assert isinstance(head, Response) and head.status == 200
    assert head.values(b"transfer-encoding") == [b"chunked"]
    assert b"".join(e.data for e in events if isinstance(e, Data)) == b"body before the trailers"
    end = events[-1]
    assert isinstance(end, EndOfMessage)
    assert end.trailers == EXPECTED


async def test_the_balancer_relays_an_http11_backends_trailers_to_an_http11_client() -> None:
    async with backends("a") as found, balancer(*found) as lb:
        _check(await _get_http11(lb.address[1], "/trailers"))


async def test_the_balancer_relays_an_http11_backends_trailers_to_an_http2_client() -> None:
    """nghttp (prior knowledge) prints each received field, then the frame it came in: the trailers
    are the fields after the body's DATA, in a HEADERS frame that ends the stream."""
    async with backends("a") as found, balancer(*found) as lb:
        code, out, err = await run(tool("nghttp"), "-v", f"http://127.0.0.1:{lb.address[1]}/trailers")
    assert code == 0, err
    text = out.decode()
    assert "body before the trailers" in text
    after_body = text.rsplit("recv DATA frame", 1)[1]
    fields, frame = after_body.split("recv HEADERS frame", 1)
    assert "grpc-status: 0" in fields and "grpc-message: all good" in fields
    assert "END_STREAM" in frame.split("\n[", 1)[0]


async def test_the_sidecar_relays_an_http2_upstreams_trailers_to_an_http11_client() -> None:
    async with H2TestServer() as server, sidecar(server.url) as url:
        _check(await _get_http11(int(url.rsplit(":", 1)[1]), "/trailers"))


async def _post_chunked_with_trailers(port: int, path: str) -> tuple[Response, bytes]:
    """A chunked POST over HTTP/1.1 whose body ends with trailer fields; the answer and its body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST %b HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\nTE: trailers\r\n\r\n"
            b"5\r\nhello\r\n0\r\nx-checksum: abc123\r\nx-count: 5\r\n\r\n" % path.encode()
        )
        parser, events = ResponseParser(), []
        while not events or not isinstance(events[-1], EndOfMessage):
            async with asyncio.timeout(10):
                events += parser.receive_data(await reader.read(65536))
        head = events[0]
        assert isinstance(head, Response)
        return head, b"".join(e.data for e in events if isinstance(e, Data))
    finally:
        writer.close()


async def test_the_balancer_relays_a_clients_request_trailers_to_an_http11_backend() -> None:
    async with backends("a") as found, balancer(*found) as lb:
        head, _ = await _post_chunked_with_trailers(lb.address[1], "/")
    assert head.values(b"x-seen-trailer-x-checksum") == [b"abc123"]
    assert head.values(b"x-seen-trailer-x-count") == [b"5"]


async def test_the_sidecar_relays_a_clients_request_trailers_to_an_http2_upstream() -> None:
    async with H2TestServer() as server, sidecar(server.url) as url:
        head, body = await _post_chunked_with_trailers(int(url.rsplit(":", 1)[1]), "/")
    assert head.status == 200
    assert json.loads(body)["trailers"] == {"x-checksum": "abc123", "x-count": "5"}

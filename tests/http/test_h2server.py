"""The HTTP/2 front of the layer 7 balancer over real connections: curl, h2load, nghttp and a bare
h2 client against `serve_h2` with a stub handler (tests/proxy/h2_peers.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, ResponseReceived, StreamEnded, StreamReset, WindowUpdated

from tests.helpers import unavailable
from tests.proxy.h2_peers import (
    BIG,
    BIG_SHA256,
    PIECE,
    SSE_EVENTS,
    SSE_GAP_S,
    H2Client,
    Stub,
    h2_client,
    h2_server,
)
from wirelab.http.h2server import MAX_RESETS_PER_S, MAX_STREAMS, STREAM_WINDOW
from wirelab.net.tls import CertificateAuthority, server_context
from wirelab.proto.http1 import Limits

pytestmark = pytest.mark.interop


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed")
    return path


async def run(*argv: str) -> tuple[int, bytes, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out, err.decode(errors="replace")


async def curl(url: str, *args: str) -> tuple[int, str, str]:
    """curl over h2c with prior knowledge; stdout ends with the HTTP version it used."""
    argv = ("-sS", "--http2-prior-knowledge", "--max-time", "60", "-w", "\n%{http_version}", *args, url)
    code, out, err = await run(tool("curl"), *argv)
    return code, out.decode(), err


def answer(out: str) -> tuple[dict[str, Any], str]:
    body, _, version = out.rpartition("\n")
    seen: dict[str, Any] = json.loads(body)
    return seen, version


async def test_get_request_as_the_handler_sees_it() -> None:
    """RFC 9113 §8.3.1: pseudo-fields become method and target, :authority the Host; §8.2.3:
    cookie fields are joined with "; "; regular fields keep their order and lowercase names."""
    async with h2_server(Stub()) as server:
        url = f"http://127.0.0.1:{server.port}/echo?q=1"
        code, out, err = await curl(
            url, "-H", "Cookie: a=1", "-H", "Cookie: b=2", "-H", "X-Multi: 1", "-H", "X-Multi: 2"
        )
    assert code == 0, err
    seen, version = answer(out)
    assert version == "2"
    assert [seen[key] for key in ("method", "target", "version", "scheme")] == [
        "GET",
        "/echo?q=1",
        "2",
        "http",
    ]
    headers = seen["headers"]
    assert headers[0] == ["host", f"127.0.0.1:{server.port}"]
    assert [value for name, value in headers if name == "x-multi"] == ["1", "2"]
    assert [value for name, value in headers if name == "cookie"] == ["a=1; b=2"]
    assert seen["has_body"] is False
    assert seen["body_size"] == 0
    assert seen["peer"].startswith("127.0.0.1:")


async def test_response_fields_lose_what_is_connection_specific(tmp_path: Path) -> None:
    """RFC 9113 §8.2.2: no Connection, Keep-Alive or fields Connection names; names lowercase."""
    async with h2_server(Stub()) as server:
        code, _, err = await curl(f"http://127.0.0.1:{server.port}/", "-D", str(tmp_path / "head"))
    assert code == 0, err
    head = (tmp_path / "head").read_text().lower().splitlines()
    assert head[0].startswith("http/2 200")
    names = {line.partition(":")[0] for line in head[1:] if line}
    assert {"content-type", "content-length", "x-upper"} <= names
    assert not names & {"connection", "keep-alive", "x-hop"}
    assert "x-upper: kept" in (tmp_path / "head").read_text()


async def test_big_bodies_both_ways(tmp_path: Path) -> None:
    """16 MiB up (echoed by sha256) and 16 MiB down, through the flow-control windows."""
    upload = tmp_path / "up.bin"
    upload.write_bytes(PIECE * (BIG // len(PIECE)))
    download = tmp_path / "down.bin"
    async with h2_server(Stub()) as server:
        base = f"http://127.0.0.1:{server.port}"
        (up_code, up_out, up_err), (down_code, down_out, down_err) = await asyncio.gather(
            curl(f"{base}/echo", "--data-binary", f"@{upload}"),
            curl(f"{base}/big", "-o", str(download)),
        )
    assert up_code == 0, up_err
    seen, version = answer(up_out)
    assert (seen["method"], version, seen["body_size"]) == ("POST", "2", BIG)
    assert seen["has_body"] is True
    assert seen["body_sha256"] == BIG_SHA256
    assert down_code == 0, down_err
    assert down_out.strip() == "2"
    assert hashlib.sha256(download.read_bytes()).hexdigest() == BIG_SHA256


async def test_h2load_many_streams_on_many_connections() -> None:
    """h2load: 20000 requests on 10 connections, 10 streams each at once; every one answered 2xx."""
    async with h2_server(Stub()) as server:
        url = f"http://127.0.0.1:{server.port}/"
        code, raw, err = await run(tool("h2load"), "-n", "20000", "-c", "10", "-m", "10", url)
    out = raw.decode()
    assert code == 0, err
    assert re.search(
        r"requests: 20000 total, 20000 started, 20000 done, 20000 succeeded, 0 failed, 0 errored", out
    ), out
    assert re.search(r"status codes: 20000 2xx, 0 3xx, 0 4xx, 0 5xx", out), out


async def test_no_more_handlers_than_max_concurrent_streams() -> None:
    """RFC 9113 §5.1.2: a client asking for 300 streams at once gets SETTINGS_MAX_CONCURRENT_STREAMS."""
    async with h2_server(stub := Stub()) as server:
        url = f"http://127.0.0.1:{server.port}/sse"
        code, raw, err = await run(tool("h2load"), "-n", "300", "-c", "1", "-m", "300", url)
    out = raw.decode()
    assert code == 0, err
    assert re.search(r"300 succeeded, 0 failed, 0 errored", out), out
    assert stub.most_active == MAX_STREAMS


async def test_server_sent_events_arrive_as_they_are_produced() -> None:
    """Each event reaches the client before the next one is produced, as SSE needs."""
    async with h2_server(stub := Stub()) as server:
        process = await asyncio.create_subprocess_exec(
            tool("curl"), "-sSN", "--http2-prior-knowledge", f"http://127.0.0.1:{server.port}/sse",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert process.stdout is not None
        arrived = []
        while line := await process.stdout.readline():
            if line.startswith(b"data: "):
                arrived.append(time.monotonic())
        assert await process.wait() == 0
    assert len(arrived) == len(stub.produced) == SSE_EVENTS
    for number in range(SSE_EVENTS - 1):
        assert arrived[number] < stub.produced[number + 1]
    assert arrived[-1] - arrived[0] >= (SSE_EVENTS - 1) * SSE_GAP_S * 0.9


async def test_gateway_error_before_answering_is_a_problem_document(tmp_path: Path) -> None:
    """RFC 9457: a 502 with an application/problem+json body on the stream."""
    async with h2_server(Stub()) as server:
        code, out, err = await curl(
            f"http://127.0.0.1:{server.port}/fail-before", "-D", str(tmp_path / "head")
        )
    assert code == 0, err
    head = (tmp_path / "head").read_text().lower()
    assert head.startswith("http/2 502")
    assert "content-type: application/problem+json" in head
    problem, version = answer(out)
    assert version == "2"
    assert problem == {
        "type": "about:blank",
        "title": "Bad Gateway",
        "status": 502,
        "detail": "the backend refused the connection",
    }


async def test_gateway_error_after_answering_resets_the_stream() -> None:
    """Once the head is out, a failure can only cut the response: RST_STREAM INTERNAL_ERROR
    after what was sent, and the connection carries on."""
    async with h2_server(Stub()) as server, h2_client(server.port) as client:
        failing = client.request(b"/fail-after")
        await client.flush()
        response = await client.next(ResponseReceived)
        assert dict(response.headers)[b":status"] == b"200"
        reset = await client.next(StreamReset)
        assert (reset.stream_id, reset.error_code) == (failing, ErrorCodes.INTERNAL_ERROR)
        assert client.bodies[failing] == b"partial"
        good = client.request(b"/echo")
        await client.flush()
        assert (await client.next(StreamEnded)).stream_id == good


async def test_client_reset_cancels_only_its_handler() -> None:
    """RFC 9113 §6.4: RST_STREAM ends that stream; the connection serves the next request."""
    async with h2_server(stub := Stub()) as server, h2_client(server.port) as client:
        hung = client.request(b"/hang")
        await client.flush()
        await client.next(ResponseReceived)
        client.h2.reset_stream(hung, ErrorCodes.CANCEL)
        await client.flush()
        async with asyncio.timeout(5):
            await stub.cancelled_one.wait()
        assert stub.cancelled == [b"/hang"]
        assert stub.active == 0
        echo = client.request(b"/echo")
        await client.flush()
        ended = await client.next(StreamEnded)
        assert ended.stream_id == echo
        assert json.loads(client.bodies[echo])["target"] == "/echo"


async def test_stream_reset_with_its_headers_is_released() -> None:
    """A RST_STREAM in the same packet as its HEADERS cancels the handler before it starts; the
    stream is still released: the connection goes idle, and closes after the idle timeout."""
    async with h2_server(Stub(), idle_s=0.3) as server, h2_client(server.port) as client:
        hung = client.request(b"/hang")
        client.h2.reset_stream(hung, ErrorCodes.CANCEL)
        await client.flush()
        goaway = await client.next(ConnectionTerminated, within_s=3)
        assert (goaway.last_stream_id, goaway.error_code) == (hung, ErrorCodes.NO_ERROR)


async def test_small_client_window_still_gets_the_whole_body(tmp_path: Path) -> None:
    """RFC 9113 §5.2: 4 KiB windows (stream and connection) mean thousands of WINDOW_UPDATEs."""
    async with h2_server(Stub()) as server:
        code, out, err = await run(
            tool("nghttp"), "-w", "12", "-W", "12", f"http://127.0.0.1:{server.port}/big"
        )
    assert code == 0, err
    assert hashlib.sha256(out).hexdigest() == BIG_SHA256


async def test_slow_backend_slows_the_upload() -> None:
    """The client's window is given back only as the handler reads, so a stalled backend stalls the
    client after at most STREAM_WINDOW bytes: the body is never buffered whole."""
    body = PIECE * 64  # 4 MiB
    async with h2_server(stub := Stub()) as server, h2_client(server.port) as client:
        await client.next(WindowUpdated)  # the connection window we grant on top of the default
        slow = client.request(b"/slow", method=b"POST", end_stream=False)
        sent = await client.send_body(slow, body, stall_s=0.5)
        assert 0 < stub.taken <= sent <= STREAM_WINDOW
        stub.release.set()
        assert await client.send_body(slow, body[sent:]) == len(body) - sent
        await client.next(StreamEnded, slow)
        assert client.bodies[slow].decode() == hashlib.sha256(body).hexdigest()


async def test_body_over_the_limit_is_answered_413() -> None:
    """Limits.max_body_bytes: a Content-Length over it is refused before any DATA, a body without one
    as soon as it passes the limit; then RST_STREAM NO_ERROR stops the upload (RFC 9113 §8.1)."""
    body = PIECE * 32  # 2 MiB
    limits = Limits(max_body_bytes=1 << 20)
    async with h2_server(stub := Stub(), limits=limits) as server, h2_client(server.port) as client:
        length = [(b"content-length", b"%d" % len(body))]
        declared = client.request(b"/echo", method=b"POST", fields=length, end_stream=False)
        await client.flush()
        await refused_as_too_large(client, declared)
        assert stub.most_active == 0  # refused before the handler ran
        streamed = client.request(b"/echo", method=b"POST", end_stream=False)
        assert await client.send_body(streamed, body) < len(body)
        await refused_as_too_large(client, streamed)


async def refused_as_too_large(client: H2Client, stream_id: int) -> None:
    response = await client.next(ResponseReceived, stream_id)
    assert dict(response.headers)[b":status"] == b"413"
    assert (await client.next(StreamReset, stream_id)).error_code == ErrorCodes.NO_ERROR
    assert json.loads(client.bodies[stream_id]) == {
        "type": "about:blank",
        "title": HTTPStatus(413).phrase,
        "status": 413,
        "detail": "the request body is over 1048576 bytes",
    }


async def test_malformed_request_resets_its_stream_only() -> None:
    """RFC 9113 §8.2.2, §8.1.1: a connection-specific field makes the request malformed, a stream
    error (PROTOCOL_ERROR); the connection carries on."""
    async with h2_server(Stub()) as server, h2_client(server.port, validate=False) as client:
        bad = client.request(b"/echo", fields=[(b"connection", b"keep-alive")])
        await client.flush()
        reset = await client.next(StreamReset)
        assert (reset.stream_id, reset.error_code) == (bad, ErrorCodes.PROTOCOL_ERROR)
        good = client.request(b"/echo")
        await client.flush()
        assert (await client.next(StreamEnded)).stream_id == good


async def test_oversized_header_section_is_answered_431() -> None:
    """RFC 9113 §10.5.1: over SETTINGS_MAX_HEADER_LIST_SIZE, 431 on the stream, not a dead connection."""
    limits = Limits(max_header_bytes=4096)
    async with h2_server(Stub(), limits=limits) as server, h2_client(server.port) as client:
        await client.next(WindowUpdated)  # our SETTINGS came before it
        assert client.h2.remote_settings.max_header_list_size == 4096
        big = client.request(b"/echo", fields=[(b"x-big", b"x" * 5000)])
        await client.flush()
        response = await client.next(ResponseReceived)
        assert response.stream_id == big
        assert dict(response.headers)[b":status"] == b"431"
        await client.next(StreamEnded)
        assert json.loads(client.bodies[big])["status"] == 431
        good = client.request(b"/echo")
        await client.flush()
        assert (await client.next(StreamEnded)).stream_id == good
        client.request(b"/echo", fields=[(b"x-big", b"x" * 9000)])  # over twice the limit: a bomb
        await client.flush()
        goaway = await client.next(ConnectionTerminated)
        assert (goaway.last_stream_id, goaway.error_code) == (good, ErrorCodes.ENHANCE_YOUR_CALM)


async def test_client_vanishing_mid_response_cancels_its_handlers() -> None:
    """A client that closes its socket ends the connection: handlers cancelled, nothing left over."""
    async with h2_server(stub := Stub()) as server:
        async with h2_client(server.port) as client:
            for _ in range(3):
                client.request(b"/hang")
            await client.flush()
            for _ in range(3):
                await client.next(ResponseReceived)
        async with asyncio.timeout(5):
            await asyncio.gather(*server.connections)  # ends by itself, not cancelled by the test
        assert stub.cancelled == [b"/hang"] * 3


async def test_cancelling_the_server_sends_goaway_and_cancels_handlers() -> None:
    """RFC 9113 §6.8: GOAWAY names the last stream processed; then the connection closes."""
    async with h2_server(stub := Stub()) as server, h2_client(server.port) as client:
        hung = client.request(b"/hang")
        await client.flush()
        await client.next(ResponseReceived)
        (connection,) = server.connections
        connection.cancel()
        goaway = await client.next(ConnectionTerminated)
        assert (goaway.last_stream_id, goaway.error_code) == (hung, ErrorCodes.NO_ERROR)
        assert await client.closed_by_server()
        assert stub.cancelled == [b"/hang"]


async def test_idle_connection_is_closed_but_not_while_a_stream_is_open() -> None:
    """The idle timeout counts only while no stream is open."""
    async with h2_server(stub := Stub(), idle_s=0.3) as server, h2_client(server.port) as client:
        client.request(b"/hang")
        await client.flush()
        await client.next(ResponseReceived)
        await asyncio.sleep(0.6)
        assert not stub.cancelled
        client.h2.reset_stream(1, ErrorCodes.CANCEL)
        await client.flush()
        started = time.monotonic()
        goaway = await client.next(ConnectionTerminated)
        assert goaway.error_code == ErrorCodes.NO_ERROR
        assert 0.2 < time.monotonic() - started < 2
        assert await client.closed_by_server()


async def test_over_tls_alpn_selects_h2(tmp_path: Path) -> None:
    """RFC 9113 §3.2: over TLS, HTTP/2 is what ALPN "h2" selects."""
    authority = CertificateAuthority.load_or_create(tmp_path / "ca")
    cert, key = authority.issue(["localhost"])
    async with h2_server(Stub(), tls=server_context(cert, key)) as server:
        code, out, err = await run(
            tool("curl"), "-sS", "--http2", "--cacert", str(authority.cert_path), "-w", "\n%{http_version}",
            f"https://localhost:{server.port}/echo",
        )  # fmt: skip
    assert code == 0, err
    seen, version = answer(out.decode())
    assert version == "2"
    assert seen["scheme"] == "https"
    assert server.alpn == ["h2"]


async def test_rapid_reset_is_cut_off() -> None:
    """CVE-2023-44487: a client that opens and resets streams as fast as it can is sent GOAWAY
    ENHANCE_YOUR_CALM and cut off, while a client resetting now and then is served."""
    async with h2_server(stub := Stub()) as server, h2_client(server.port) as client:
        for _ in range(MAX_RESETS_PER_S + 50):
            stream = client.request(b"/hang")
            client.h2.reset_stream(stream, ErrorCodes.CANCEL)
        await client.flush()
        goaway = await client.next(ConnectionTerminated)
        assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert await client.closed_by_server()
        assert stub.active == 0

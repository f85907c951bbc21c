"""`wirelab sidecar` over real connections: curl and httpx as HTTP/1.1 clients, nginx as the HTTP/2
upstream (h2c and TLS), and a small h2 server (tests/proxy/h2_upstream_server.py) for the failures
nginx cannot be told to produce.

Theory of operation: nginx logs `$server_protocol $connection $http_traceparent $http_x_request_id
$http_tracestate` for every request, so what reached the upstream, and on which of its connections,
is read from its access log. The sidecar runs in the test's event loop (its log lines captured),
except in the CLI test, which starts `wirelab sidecar` as a child process and stops it with SIGTERM.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import unavailable
from tests.proxy.h2_upstream_server import H2TestServer
from wirelab.errors import ConfigError
from wirelab.net.tls import CertificateAuthority
from wirelab.proto.tracecontext import parse
from wirelab.proxy.sidecar import Sidecar, sidecar_config
from wirelab.testing import free_port

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
BIG = 16 << 20
PIECE = os.urandom(1 << 16)


@dataclass(frozen=True)
class Nginx:
    h2c_port: int
    tls_port: int
    log: Path
    ca: Path

    def lines(self, marker: str) -> list[list[str]]:
        """The access log lines of requests whose x-request-id contains `marker`, split in fields."""
        return [line.split() for line in self.log.read_text().splitlines() if marker in line]


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if shutil.which("nginx") is None:
        unavailable("nginx is not installed (apt-get install nginx)")
    workdir = tmp_path_factory.mktemp("nginx")
    ca = CertificateAuthority.load_or_create(workdir / "ca")
    cert, key = ca.issue(["localhost", "127.0.0.1"])
    site = Nginx(free_port(), free_port(), workdir / "access.log", ca.cert_path)
    temps = "".join(f"  {kind}_temp_path {workdir}/{kind};\n" for kind in ("client_body", "proxy"))
    config = workdir / "nginx.conf"
    config.write_text(
        f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/error.log warn;\nevents {{ worker_connections 512; }}\nhttp {{\n"
        "  log_format lab '$server_protocol $connection $http_traceparent $http_x_request_id "
        "$http_tracestate';\n"
        f"  access_log {site.log} lab;\n{temps}"
        "  keepalive_requests 100000;\n"
        f"  server {{ listen 127.0.0.1:{site.h2c_port} http2; location / {{ return 200 'hello'; }} }}\n"
        f"  server {{ listen 127.0.0.1:{site.tls_port} ssl http2; ssl_certificate {cert}; "
        f"ssl_certificate_key {key}; location / {{ return 200 'hello over tls'; }} }}\n}}\n"
    )
    command = ["nginx", "-e", str(workdir / "error.log"), "-p", str(workdir), "-c", str(config)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        for port in (site.h2c_port, site.tls_port):
            _wait_listening(port, process)
        yield site
    finally:
        process.terminate()
        process.communicate(timeout=10)


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {process.communicate()[1].decode()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on {port}")


@asynccontextmanager
async def running(upstream: str, **options: Any) -> AsyncIterator[str]:
    """A sidecar on a free port in front of `upstream`; yields its base URL."""
    sidecar = Sidecar(sidecar_config("127.0.0.1:0", upstream, **options))
    await sidecar.start()
    try:
        yield "http://{}:{}".format(*sidecar.address)
    finally:
        await sidecar.close()


@pytest.fixture
def sidecar_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="wirelab.sidecar")
    return caplog


def _request_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "wirelab.sidecar" and "attempts=" in r.getMessage()
    ]


async def curl(*args: str) -> tuple[int, bytes, bytes]:
    process = await asyncio.create_subprocess_exec(
        "curl", "-sS", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out, err


# -- through nginx ------------------------------------------------------------------------------------


async def test_curl_reaches_nginx_over_http2_in_the_trace_it_sent(
    nginx: Nginx, sidecar_log: pytest.LogCaptureFixture
) -> None:
    """W3C Trace Context §3.2: the trace-id is kept, the parent-id becomes our span; tracestate kept."""
    async with running(f"http://127.0.0.1:{nginx.h2c_port}") as url:
        code, out, err = await curl(
            "-D-", "-H", f"traceparent: {TRACEPARENT}", "-H", "tracestate: lab=1",
            "-H", "x-request-id: kept-1", f"{url}/hello",
        )  # fmt: skip
    assert code == 0, err
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b"hello"
    assert b"\r\nx-request-id: kept-1" in head
    [[protocol, _, traceparent, request_id, tracestate]] = nginx.lines("kept-1")
    assert (protocol, request_id, tracestate) == ("HTTP/2.0", "kept-1", "lab=1")
    sent = parse(traceparent)
    assert sent is not None
    assert sent.trace_id == TRACE
    assert sent.parent_id != "00f067aa0ba902b7"
    [line] = _request_lines(sidecar_log)
    assert "GET /hello 200" in line and f"trace={TRACE}" in line and "attempts=1" in line


async def test_a_request_without_a_trace_starts_one_and_gets_a_request_id(nginx: Nginx) -> None:
    """§4.3: no (or an invalid) traceparent: a new trace, and its tracestate is dropped."""
    async with running(f"http://127.0.0.1:{nginx.h2c_port}") as url, httpx.AsyncClient() as client:
        plain = await client.get(f"{url}/", headers={"x-request-id": "fresh-1"})
        broken = await client.get(
            f"{url}/", headers={"traceparent": "00-zz-bad", "tracestate": "a=b", "x-request-id": "fresh-2"}
        )
        generated = await client.get(f"{url}/")
    assert plain.status_code == broken.status_code == generated.status_code == 200
    assert plain.headers["x-request-id"] == "fresh-1"
    request_id = generated.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    [[_, _, first, _, _]] = nginx.lines("fresh-1")
    [[_, _, second, _, tracestate]] = nginx.lines("fresh-2")
    [[_, _, third, seen_id, _]] = nginx.lines(request_id)
    traces = {parse(value).trace_id for value in (first, second, third)}  # type: ignore[union-attr]
    assert len(traces) == 3 and TRACE not in traces
    assert tracestate == "-"  # nginx's empty value
    assert seen_id == request_id


@pytest.mark.parametrize("connections", [1, 2])
async def test_twenty_client_connections_share_the_upstream_connections(
    nginx: Nginx, connections: int
) -> None:
    """The point of the pattern: the upstream sees one HTTP/2 connection (or --connections N), the
    requests of every client connection multiplexed on it as streams."""

    async def client_session(n: int) -> list[int]:
        async with httpx.AsyncClient() as client:  # its own connection, kept alive
            return [
                (
                    await client.get(f"{url}/", headers={"x-request-id": f"many{connections}-{n}-{i}"})
                ).status_code
                for i in range(5)
            ]

    upstream = f"http://127.0.0.1:{nginx.h2c_port}"
    async with running(upstream, connections=connections) as url:
        statuses = await asyncio.gather(*(client_session(n) for n in range(20)))
    assert statuses == [[200] * 5] * 20
    lines = nginx.lines(f"many{connections}-")
    assert len(lines) == 100
    assert {line[0] for line in lines} == {"HTTP/2.0"}
    assert len({line[1] for line in lines}) == connections


async def test_a_tls_upstream_is_reached_with_alpn_h2(nginx: Nginx) -> None:
    """RFC 9113 §3.2: HTTP/2 over TLS is chosen by ALPN; the certificate is checked against our CA."""
    upstream = f"https://localhost:{nginx.tls_port}"
    async with running(upstream, cafile=nginx.ca) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/", headers={"x-request-id": "tls-1"})
    assert (response.status_code, response.text) == (200, "hello over tls")
    [[protocol, *_]] = nginx.lines("tls-1")
    assert protocol == "HTTP/2.0"


async def test_a_tls_upstream_with_an_unknown_certificate_is_a_502(nginx: Nginx, tmp_path: Path) -> None:
    other = CertificateAuthority.load_or_create(tmp_path / "other")
    upstream = f"https://localhost:{nginx.tls_port}"
    async with running(upstream, cafile=other.cert_path) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/")
    assert response.status_code == 502
    assert "certificate" in response.json()["detail"]


# -- through the h2 test server ---------------------------------------------------------------------


@pytest.mark.parametrize("framing", [[], ["-H", "transfer-encoding: chunked"]], ids=["length", "chunked"])
async def test_sixteen_mib_go_both_ways_intact_under_flow_control(
    tmp_path: Path, framing: list[str]
) -> None:
    """RFC 9113 §5.2: far more than any window, in both directions at once (curl reads the echo while
    it uploads); the response comes chunked, as the upstream gave no length (RFC 9112 §7.1). curl
    sends Expect: 100-continue for a body this big, and the sidecar answers it (RFC 9110 §10.1.1)."""
    upload, echoed = tmp_path / "upload", tmp_path / "echoed"
    upload.write_bytes(PIECE * (BIG // len(PIECE)))
    async with H2TestServer() as server, running(server.url) as url:
        options = ["-D-", "-o", str(echoed), "--data-binary", f"@{upload}", *framing]
        code, head, err = await curl(*options, f"{url}/echo")
    assert code == 0, err
    assert head.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in head
    assert hashlib.sha256(echoed.read_bytes()).digest() == hashlib.sha256(upload.read_bytes()).digest()


async def test_a_get_answered_503_is_retried_and_a_post_is_not(
    sidecar_log: pytest.LogCaptureFixture,
) -> None:
    async with H2TestServer() as server, running(server.url) as url, httpx.AsyncClient() as client:
        get = await client.get(f"{url}/flaky")
        server.hits.clear()
        post = await client.post(f"{url}/flaky", content=b"once")
    assert (get.status_code, post.status_code) == (200, 503)
    assert server.hits["/flaky"] == 1
    lines = _request_lines(sidecar_log)
    assert "GET /flaky 200" in lines[0] and "attempts=2" in lines[0]
    assert "POST /flaky 503" in lines[1] and "attempts=1" in lines[1]


async def test_a_refused_stream_is_sent_again_even_for_a_bodyless_post() -> None:
    """RFC 9113 §8.7: REFUSED_STREAM means the request was not processed at all."""
    async with H2TestServer() as server, running(server.url) as url, httpx.AsyncClient() as client:
        get = await client.get(f"{url}/refuse")
        server.hits.clear()
        post = await client.post(f"{url}/refuse")
    assert (get.status_code, post.status_code) == (200, 200)
    assert server.hits["/refuse"] == 2


async def test_goaway_sends_the_streams_in_flight_again_on_a_new_connection() -> None:
    """RFC 9113 §6.8: the stream above GOAWAY's last stream id was never processed, so even a POST
    goes again; the one below it is cut short (h2 ends the connection at GOAWAY, python-hyper/h2#1181)
    and goes again only because it is a GET."""
    async with (
        H2TestServer(slow_s=0.5) as server,
        running(server.url) as url,
        httpx.AsyncClient() as first,
        httpx.AsyncClient() as second,
    ):
        slow = asyncio.create_task(first.get(f"{url}/slow"))
        await asyncio.sleep(0.2)
        goaway = await second.post(f"{url}/goaway")
        assert (await slow).status_code == 200
    assert goaway.status_code == 200
    assert goaway.json()["connection"] == 2
    assert server.connections == 2
    seen = [(number, fields[":path"]) for number, fields in server.seen]
    assert seen[:2] == [(1, "/slow"), (1, "/goaway")]
    assert sorted(seen[2:]) == [(2, "/goaway"), (2, "/slow")]


async def test_a_lost_connection_is_retried_and_the_next_request_reconnects() -> None:
    async with H2TestServer() as server, running(server.url) as url, httpx.AsyncClient() as client:
        reset = await client.get(f"{url}/reset")  # the upstream drops the connection: a GET goes again
        bye = await client.get(f"{url}/bye")  # answered, then the upstream closes
        after = await client.get(f"{url}/")
    assert [reset.status_code, bye.status_code, after.status_code] == [200, 200, 200]
    assert (bye.json()["connection"], after.json()["connection"]) == (2, 3)


async def test_a_response_cut_short_is_not_retried(sidecar_log: pytest.LogCaptureFixture) -> None:
    """Once part of the response went to the client, a retry would repeat it: the connection is
    closed, and the client sees the body end early."""
    async with H2TestServer() as server, running(server.url) as url, httpx.AsyncClient() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{url}/cut")
    assert server.hits["/cut"] == 1
    [line] = _request_lines(sidecar_log)
    assert "GET /cut 200, cut short" in line and "attempts=1" in line


async def test_the_peers_stream_limit_is_kept() -> None:
    """RFC 9113 §5.1.2: no more streams at once than SETTINGS_MAX_CONCURRENT_STREAMS; the rest wait."""
    async with H2TestServer(max_streams=2, slow_s=0.2) as server, running(server.url) as url:

        async def one() -> int:
            async with httpx.AsyncClient() as client:
                return (await client.get(f"{url}/slow")).status_code

        statuses = await asyncio.gather(*(one() for _ in range(8)))
    assert statuses == [200] * 8
    assert server.peak_streams == 2
    assert server.hits["/slow"] == 8


async def test_pipelined_requests_are_answered_in_order() -> None:
    """RFC 9112 §9.3.2: responses in the order of the requests."""
    async with H2TestServer() as server, running(server.url) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in range(3)))
        answers = []
        for _ in range(3):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head)[1])  # type: ignore[index]
            answers.append(json.loads(await reader.readexactly(length))["headers"][":path"])
        writer.close()
        await writer.wait_closed()
    assert answers == ["/0", "/1", "/2"]


async def test_an_unreachable_upstream_is_a_502_problem(sidecar_log: pytest.LogCaptureFixture) -> None:
    async with running(f"http://127.0.0.1:{free_port()}", retries=1) as url, httpx.AsyncClient() as client:
        response = await client.get(f"{url}/")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 502
    assert "cannot connect" in response.json()["detail"]
    assert "attempts=2" in _request_lines(sidecar_log)[0]


async def test_an_upstream_slower_than_the_timeout_is_a_504_problem() -> None:
    async with (
        H2TestServer(slow_s=3) as server,
        running(server.url, timeout_s=0.3) as url,
        httpx.AsyncClient() as client,
    ):
        started = time.monotonic()
        response = await client.get(f"{url}/slow")
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert time.monotonic() - started < 2  # not retried: a timeout would only come again
    assert server.hits["/slow"] == 1


async def test_closing_lets_the_request_in_flight_finish() -> None:
    async with H2TestServer(slow_s=0.5) as server:
        sidecar = Sidecar(sidecar_config("127.0.0.1:0", server.url))
        await sidecar.start()
        url = "http://{}:{}".format(*sidecar.address)
        async with httpx.AsyncClient() as client:
            slow = asyncio.create_task(client.get(f"{url}/slow"))
            await asyncio.sleep(0.2)
            await sidecar.close()
            response = await slow
            with pytest.raises(httpx.ConnectError):
                await client.get(f"{url}/", headers={"connection": "close"})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("upstream", "options", "message"),
    [
        ("ftp://x:1", {}, "upstream"),
        ("http://x:1/path", {}, "upstream"),
        ("http://x:1", {"cafile": Path("ca.pem")}, "cacert"),
        ("http://x:1", {"connections": 0}, "connections"),
        ("http://x:1", {"retries": -1}, "retries"),
        ("http://x:1", {"timeout_s": 0}, "timeout"),
    ],
)
def test_bad_settings_are_refused_by_name(upstream: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sidecar_config("127.0.0.1:0", upstream, **options)


# -- the command ------------------------------------------------------------------------------------


def test_the_command_serves_and_stops_cleanly_on_sigterm(nginx: Nginx) -> None:
    port = free_port()
    command = [
        sys.executable, "-m", "wirelab", "sidecar", "--listen", f"127.0.0.1:{port}",
        "--upstream", f"http://127.0.0.1:{nginx.h2c_port}",
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        _wait_listening(port, process)
        done = subprocess.run(
            ["curl", "-sS", "-H", "x-request-id: cli-1", f"http://127.0.0.1:{port}/"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert done.stdout == b"hello", done.stderr
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0, err.decode()
    assert b"GET / 200" in err and b"request_id=cli-1" in err
    assert nginx.lines("cli-1")[0][0] == "HTTP/2.0"


def test_bad_flags_are_usage_errors() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "wirelab", "sidecar", "--upstream", "ftp://nowhere"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert b"upstream" in done.stderr

"""`wirelab fetch` over HTTP/1.0, HTTP/1.1 (keep-alive, pipelining) and HTTP/2 (TLS and h2c) against
nginx serving a generated gallery: a page of 100 images, a stylesheet and a script."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import pytest

from tests.clients.fetch_peers import BIG, Gallery, Nginx, make_gallery, run_nginx
from wirelab.clients.fetch import FetchError, PageResult, TraceEvent, fetch, fetch_page, page_resources
from wirelab.clients.fetch_h2 import FrameTap
from wirelab.clients.wire import Target
from wirelab.testing import free_port

PAGE_REQUESTS = 103  # the page, its stylesheet, its script and 100 images


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Gallery:
    return make_gallery(tmp_path_factory.mktemp("gallery"))


@pytest.fixture(scope="module")
def nginx(gallery: Gallery, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    yield from run_nginx(gallery, tmp_path_factory.mktemp("nginx"))


def _logged(nginx: Nginx, since: int, count: int) -> list[list[str]]:
    """nginx's log lines after `since`, once there are `count` (it logs after it answered)."""
    deadline = time.monotonic() + 5
    while len(lines := nginx.logged(since)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return lines


def _check_page(page: PageResult, gallery: Gallery) -> None:
    """Every resource came, whole, and each response is the one for its request."""
    assert page.requests == PAGE_REQUESTS
    assert page.statuses == (200,) * PAGE_REQUESTS
    assert [exchange.path for exchange in page.exchanges] == ["/", *gallery.resources]
    for exchange in page.exchanges:
        assert exchange.body_bytes == exchange.content_length
        assert exchange.sha256 == gallery.digest(exchange.path if exchange.path != "/" else "/index.html")
    assert page.bytes_on_wire > sum(exchange.body_bytes for exchange in page.exchanges)


def test_page_resources_are_the_same_origin_ones_in_page_order() -> None:
    """<img src>, <link href>, <script src>: relative, absolute-path and same-origin absolute URLs,
    each once; another origin's and a link's target (<a href>) are not loaded."""
    html = (
        b'<link rel="stylesheet" href="css/a.css"><script src="/js/b.js"></script>'
        b'<img src="https://example.org:8443/img/c.png"><img src="img/c.png"><a href="/d.html">d</a>'
        b'<img src="https://cdn.example.net/e.png"><img src="http://example.org:8443/f.png">'
    )
    target = Target.parse("https://example.org:8443/gallery/index.html")
    assert page_resources(html, target) == [
        "/gallery/css/a.css",
        "/js/b.js",
        "/img/c.png",
        "/gallery/img/c.png",
    ]


def test_the_frame_tap_reads_what_h2_writes() -> None:
    """RFC 9113 §3.4: the client preface, then SETTINGS; HEADERS are shown HPACK-decoded."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    connection.send_headers(
        1, [(":method", "GET"), (":scheme", "https"), (":authority", "a"), (":path", "/x")]
    )
    data = connection.data_to_send()
    tap = FrameTap(client=True)
    lines = tap.feed(data[:10]) + tap.feed(data[10:])
    assert lines[0] == "connection preface (PRI * HTTP/2.0)"
    assert lines[1].startswith("SETTINGS stream 0 len ")
    assert (
        lines[2]
        == "HEADERS stream 1 [END_HEADERS] len 9: :method: GET, :scheme: https, :authority: a, :path: /x"
    )


async def test_http10_the_server_closes_after_each_response(nginx: Nginx, gallery: Gallery) -> None:
    """RFC 9112 §9.3: an HTTP/1.0 request without keep-alive: the server closes the connection."""
    since = nginx.log_size()
    result = await fetch(f"http://127.0.0.1:{nginx.plain_port}/app.js", http="1.0")
    assert (result.status, result.closed_by_server, result.connections) == (200, True, 1)
    assert result.body_bytes == result.content_length == (gallery.root / "app.js").stat().st_size
    assert result.handshake_ms is None and result.handshakes == 0
    assert result.connect_ms <= result.first_byte_ms <= result.total_ms
    assert _logged(nginx, since, 1)[0][1:] == ["HTTP/1.0", "/app.js", "200"]


async def test_http10_page_opens_a_connection_per_request(nginx: Nginx, gallery: Gallery) -> None:
    page = await fetch_page(f"https://127.0.0.1:{nginx.tls_port}/", http="1.0", cafile=gallery.ca)
    _check_page(page, gallery)
    assert page.connections == page.handshakes == PAGE_REQUESTS
    assert all(stats.closed_by_server and stats.requests == 1 for stats in page.connection_stats)


async def test_http11_page_keeps_six_connections_alive(nginx: Nginx, gallery: Gallery) -> None:
    """A browser's pool: 6 keep-alive connections carry the 103 requests; nginx saw 6 connections."""
    since = nginx.log_size()
    page = await fetch_page(f"https://127.0.0.1:{nginx.tls_port}/", http="1.1", cafile=gallery.ca)
    _check_page(page, gallery)
    assert page.connections == page.handshakes == 6
    assert sum(stats.requests for stats in page.connection_stats) == PAGE_REQUESTS
    assert not any(stats.closed_by_server for stats in page.connection_stats)
    lines = _logged(nginx, since, PAGE_REQUESTS)
    assert len({line[0] for line in lines}) == 6
    assert {line[1] for line in lines} == {"HTTP/1.1"}


async def test_pipelined_requests_all_go_before_the_responses_which_come_in_order(
    nginx: Nginx, gallery: Gallery
) -> None:
    """RFC 9112 §9.3.2: the 102 requests are written at once on one connection, before any of their
    responses is read; each response is its request's (the body's digest is its file's)."""
    events: list[TraceEvent] = []
    page = await fetch_page(
        f"http://127.0.0.1:{nginx.plain_port}/",
        http="1.1",
        pipeline=True,
        connections=1,
        tracer=events.append,
    )
    _check_page(page, gallery)
    assert page.connections == 1 and page.connection_stats[0].requests == PAGE_REQUESTS
    wire = [event.direction for event in events if event.direction != "note"]
    assert wire[:2] == ["send", "recv"]  # the page first, alone
    assert wire[2:] == ["send"] * (PAGE_REQUESTS - 1) + ["recv"] * (PAGE_REQUESTS - 1)


async def test_pipelining_over_several_connections_shares_the_page_out(
    nginx: Nginx, gallery: Gallery
) -> None:
    """Three pipelined connections: the resources dealt out in turn, 34 each, the page on the first."""
    url = f"https://127.0.0.1:{nginx.tls_port}/"
    page = await fetch_page(url, http="1.1", pipeline=True, connections=3, cafile=gallery.ca)
    _check_page(page, gallery)
    assert [stats.requests for stats in page.connection_stats] == [35, 34, 34]
    assert page.handshakes == 3


async def test_h2_page_is_multiplexed_on_one_connection(nginx: Nginx, gallery: Gallery) -> None:
    """Every request a stream (1, 3, 5, ...) of one TLS connection; nginx logged one connection."""
    since = nginx.log_size()
    events: list[TraceEvent] = []
    url = f"https://127.0.0.1:{nginx.tls_port}/"
    page = await fetch_page(url, http="2", cafile=gallery.ca, tracer=events.append)
    _check_page(page, gallery)
    assert page.connections == page.handshakes == 1
    assert page.connection_stats[0].protocol == "h2"
    heads = [e.text for e in events if e.direction == "send" and e.text.startswith("HEADERS")]
    assert [text.split()[2] for text in heads] == [str(n) for n in range(1, 2 * PAGE_REQUESTS, 2)]
    lines = _logged(nginx, since, PAGE_REQUESTS)
    assert len({line[0] for line in lines}) == 1 and {line[1] for line in lines} == {"HTTP/2.0"}


async def test_h2c_with_prior_knowledge(nginx: Nginx, gallery: Gallery) -> None:
    """http:// with --http 2: HTTP/2 in clear from the first byte (RFC 9113 §3.3), no handshake."""
    page = await fetch_page(f"http://127.0.0.1:{nginx.h2c_port}/", http="2")
    _check_page(page, gallery)
    assert (page.connections, page.handshakes, page.connection_stats[0].protocol) == (1, 0, "h2c")


async def test_h2_flow_control_opens_the_windows_as_a_big_body_is_read(
    nginx: Nginx, gallery: Gallery
) -> None:
    """RFC 9113 §6.9: 16 MiB through 1 MiB stream windows, reopened by WINDOW_UPDATEs as we read."""
    events: list[TraceEvent] = []
    url = f"https://127.0.0.1:{nginx.tls_port}/big.bin"
    result = await fetch(url, http="2", cafile=gallery.ca, tracer=events.append)
    assert result.body_bytes == result.content_length == BIG
    assert result.sha256 == gallery.digest("/big.bin")
    updates = [
        e.text for e in events if e.direction == "send" and e.text.startswith("WINDOW_UPDATE stream 1")
    ]
    assert len(updates) > 8
    assert BIG < result.bytes_on_wire < BIG * 1.02


async def test_tls_without_h2_in_alpn_is_a_clear_error(nginx: Nginx, gallery: Gallery) -> None:
    with pytest.raises(FetchError, match=r"did not agree to HTTP/2 over TLS \(ALPN: http/1.1\)"):
        await fetch(f"https://127.0.0.1:{nginx.h1_tls_port}/", http="2", cafile=gallery.ca)


async def test_an_untrusted_certificate_names_what_was_trusted(nginx: Nginx) -> None:
    with pytest.raises(FetchError, match="certificate is not trusted by the system's CAs"):
        await fetch(f"https://127.0.0.1:{nginx.tls_port}/", http="1.1")


async def test_a_refused_connection_says_so() -> None:
    with pytest.raises(FetchError, match="connection refused"):
        await fetch(f"http://127.0.0.1:{free_port()}/", http="1.1")


def _wirelab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wirelab", "fetch", *args], capture_output=True, text=True, timeout=60
    )


def test_the_command_shows_the_frames_with_v(nginx: Nginx, gallery: Gallery) -> None:
    done = _wirelab(
        f"https://127.0.0.1:{nginx.tls_port}/", "--http", "2", "-v", "--cacert", str(gallery.ca)
    )
    assert done.returncode == 0, done.stderr
    assert "200 OK  over h2" in done.stdout
    assert "SETTINGS stream 0 len" in done.stderr and ":status: 200" in done.stderr


def test_the_command_fails_in_one_line(tmp_path: Path) -> None:
    done = _wirelab(f"http://127.0.0.1:{free_port()}/")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "connection refused" in done.stderr


def test_the_command_prints_a_page_as_json(nginx: Nginx, gallery: Gallery) -> None:
    url = f"http://127.0.0.1:{nginx.plain_port}/"
    done = _wirelab(url, "--page", "--pipeline", "--json")
    assert done.returncode == 0, done.stderr
    page = json.loads(done.stdout)
    assert (page["requests"], page["connections"], page["handshakes"]) == (PAGE_REQUESTS, 1, 0)
    assert "body" not in page["exchanges"][0]


def test_ctrl_c_stops_the_command_cleanly(nginx: Nginx, gallery: Gallery) -> None:
    """SIGINT mid-transfer: exit 130 and one line, no traceback, whatever was in flight."""
    command = [sys.executable, "-m", "wirelab", "fetch", f"https://127.0.0.1:{nginx.tls_port}/big.bin"]
    arguments = [*command, "--http", "2", "--cacert", str(gallery.ca), "-v"]
    with subprocess.Popen(arguments, stderr=subprocess.PIPE, text=True) as process:
        assert process.stderr is not None
        for line in process.stderr:  # the transfer has begun
            if "DATA stream 1" in line:
                break
        process.send_signal(signal.SIGINT)
        rest = process.stderr.read()
        assert process.wait(timeout=20) == 130
    assert "Traceback" not in rest and rest.rstrip().endswith("wirelab fetch: interrupted")

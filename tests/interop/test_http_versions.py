"""`wirelab up --http 1.1,2,3` as third-party clients see it over HTTP/1.0, HTTP/1.1 and HTTP/2.

One server (the module's `versions` fixture) serves every test: curl, h2load and nghttp are the
reference clients, a raw socket does what they will not (pipelining, chunks as written). HTTP/3 is
tested with the aioquic adapter itself; hostile input is in test_http_versions_bad.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import subprocess
from pathlib import Path

import pytest
from websockets.sync.client import connect as ws_connect

from tests.helpers import create_job, wait_done
from tests.interop.conftest import VersionsServer
from tests.interop.http_versions import blob, connect, port_of, read_answer
from tests.interop.interop_peers import peer_tool
from wirelab.app.gallery import THUMBNAILS, page, thumbnail

pytestmark = pytest.mark.interop

BIG = 16 << 20
PNG = b"\x89PNG\r\n\x1a\n"
"""The signature POST /images sniffs: an image body is this and any bytes after it."""


def run(tool: str, *args: str, timeout: float = 30) -> bytes:
    """`tool ARGS` run to its end, successfully; its standard output."""
    done = subprocess.run([peer_tool(tool), *args], capture_output=True, timeout=timeout, check=False)
    assert done.returncode == 0, (tool, args, done.returncode, done.stderr[-2000:])
    return done.stdout


def base(versions: VersionsServer, tls: bool) -> str:
    return versions.tls_url if tls else versions.url


def curl(versions: VersionsServer, *args: str) -> bytes:
    return run("curl", "-sS", "--cacert", str(versions.ca), *args)


def sse_events(body: bytes) -> list[tuple[int, str]]:
    """(id, event) of each event of a text/event-stream body."""
    events = []
    for block in body.decode().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            events.append((int(fields["id"]), fields["event"]))
    return events


@pytest.mark.parametrize(
    ("flag", "tls", "version", "connects"),
    [
        ("--http1.0", False, "1.1", ["1", "1"]),
        ("--http1.1", False, "1.1", ["1", "0"]),
        ("--http1.1", True, "1.1", ["1", "0"]),
        ("--http2", True, "2", ["1", "0"]),
        ("--http2-prior-knowledge", False, "2", None),
    ],
)
def test_curl_fetches_page_and_thumbnail(
    versions: VersionsServer, tmp_path: Path, flag: str, tls: bool, version: str, connects: list[str] | None
) -> None:
    """RFC 9112 §9.3 (HTTP/1.1 keeps the connection, HTTP/1.0 does not) and RFC 9113 §3.2/§3.3 (h2 by
    ALPN over TLS, by prior knowledge in the clear). RFC 9110 §6.2: a server answers an HTTP/1.0
    request with its own version, 1.1. `connects` is how many new connections each transfer opened."""
    urls = [f"{base(versions, tls)}/gallery", f"{base(versions, tls)}/gallery/thumbs/007.png"]
    outputs = [tmp_path / "page", tmp_path / "thumb"]
    if connects is None:  # curl 7.88 fails a reused h2c connection (curl/curl#10634): one run each
        seen = [curl(versions, flag, "-o", str(out), "-w", "%{http_version} %{http_code}", url).decode()
                for url, out in zip(urls, outputs, strict=True)]  # fmt: skip
    else:
        args = [arg for out in outputs for arg in ("-o", str(out))]
        w = "%{http_version} %{http_code} %{num_connects}\n"
        seen = curl(versions, flag, *args, "-w", w, *urls).decode().splitlines()
    assert [line.split()[:2] for line in seen] == [[version, "200"]] * 2
    if connects is not None:
        assert [line.split()[2] for line in seen] == connects
    assert outputs[0].read_bytes() == page()
    assert outputs[1].read_bytes() == thumbnail(7)


@pytest.mark.parametrize(("tls", "protocol"), [(True, "h2"), (False, "h2c")])
def test_h2load_many_streams_all_succeed(versions: VersionsServer, tls: bool, protocol: str) -> None:
    """RFC 9113 §5.1.2: 10 concurrent streams on each of 2 connections, 300 requests, all answered."""
    out = run("h2load", "-n", "300", "-c", "2", "-m", "10", f"{base(versions, tls)}/gallery/thumbs/001.png")
    text = out.decode()
    assert f"Application protocol: {protocol}\n" in text, text
    assert "300 done, 300 succeeded, 0 failed, 0 errored, 0 timeout" in text, text
    assert "status codes: 300 2xx, 0 3xx, 0 4xx, 0 5xx" in text, text


@pytest.mark.parametrize("tls", [True, False])
def test_nghttp_loads_the_gallery_over_one_connection(versions: VersionsServer, tls: bool) -> None:
    """RFC 9113 §5: the page and its 102 resources (-a) multiplexed as streams of one connection."""
    text = run("nghttp", "-nva", f"{base(versions, tls)}/gallery").decode()
    assert text.count("] Connected") == 1
    resources = 1 + 2 + THUMBNAILS
    assert text.count("send HEADERS frame") == resources
    assert text.count(":status: 200") == resources
    received = set(re.findall(r"recv ([A-Z_]+) frame", text))
    assert {"SETTINGS", "HEADERS", "DATA"} <= received
    paths = set(re.findall(r":path: (\S+)", text))
    assert {"/gallery", "/gallery/style.css", "/gallery/app.js", "/gallery/thumbs/099.png"} <= paths


def test_pipelined_requests_are_answered_in_order(versions: VersionsServer) -> None:
    """RFC 9112 §9.3.2: a server MUST answer pipelined requests in the order they were received."""
    sizes = [70_000, 5, 1 << 20, 0, 300]
    paths = [f"/gallery/blob/{size}" for size in sizes]
    paths.insert(2, "/healthz")
    requests = b"".join(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for path in paths)
    with connect(port_of(versions.url)) as sock, sock.makefile("rb") as reader:
        sock.sendall(requests)  # one write: every request is in before the first answer is out
        answers = [read_answer(reader) for _ in paths]
    assert [answer.status for answer in answers] == [200] * len(paths)
    assert answers.pop(2).json()["status"] == "ok"
    assert [answer.body for answer in answers] == [blob(size) for size in sizes]


def test_http10_request_is_answered_then_closed(versions: VersionsServer) -> None:
    """RFC 9112 §9.3: without keep-alive, an HTTP/1.0 connection closes after its one response."""
    with connect(port_of(versions.url)) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        answer = read_answer(reader)
        assert answer.status == 200
        assert answer.json()["status"] == "ok"
        assert sock.recv(1) == b"", "the server kept an HTTP/1.0 connection open"


def test_chunked_request_body(versions: VersionsServer) -> None:
    """RFC 9112 §7.1: a body of chunks of any sizes, no Content-Length, arrives whole. POST /images
    takes a body of any size and answers with the length and SHA-256 it stored, so the test sees
    every byte arrived; `?targets=` (empty) stores the image without starting a job."""
    body = PNG + blob(100_000)
    pieces = [body[:1], body[1:5000], body[5000:5001], body[5001:]]
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    head = (
        b"POST /images?targets= HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    with connect(port_of(versions.url)) as sock, sock.makefile("rb") as reader:
        sock.sendall(head + chunked)
        answer = read_answer(reader)
    assert answer.status == 201, answer.body
    stored = answer.json()
    assert (stored["bytes"], stored["media_type"]) == (len(body), "image/png")
    assert stored["sha256"] == hashlib.sha256(body).hexdigest()


def test_event_stream_is_chunked_over_http11(versions: VersionsServer) -> None:
    """RFC 9112 §7.1: a response of unknown length (an event stream) is sent in chunks; curl decodes
    them to the same events the raw socket de-framed."""
    job = create_job(versions.url, steps=3, step_ms=10)
    wait_done(versions.url, job["id"])
    path = f"/jobs/{job['id']}/events"
    with connect(port_of(versions.url)) as sock, sock.makefile("rb") as reader:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        answer = read_answer(reader)
    assert answer.status == 200
    assert answer.fields["transfer-encoding"] == "chunked"
    assert "content-length" not in answer.fields
    assert answer.chunks and all(answer.chunks)
    decoded = curl(versions, "--http1.1", "-N", "--max-time", "10", f"{versions.url}{path}")
    assert sse_events(decoded) == sse_events(answer.body)
    assert sse_events(decoded)[-1] == (6, "done")


@pytest.mark.parametrize("flag", ["--http2", "--http2-prior-knowledge"])
def test_16_mib_download_over_h2(versions: VersionsServer, tmp_path: Path, flag: str) -> None:
    """RFC 9113 §5.2: 16 MiB is 256 times the default 64 KiB window: the body arrives only if the
    server sends as the client's WINDOW_UPDATEs allow, and every byte must be the pattern."""
    out = tmp_path / "blob"
    url = f"{base(versions, flag == '--http2')}/gallery/blob/{BIG}"
    written = curl(versions, flag, "-o", str(out), "-w", "%{http_version}", url)
    assert written == b"2"
    assert out.read_bytes() == blob(BIG)


def test_16_mib_download_through_a_16_kib_window(versions: VersionsServer) -> None:
    """RFC 9113 §6.9: nghttp's windows of 2**14-1 bytes (stream and connection) make the server stop
    at every 16 KiB and wait for a WINDOW_UPDATE, more than a thousand times."""
    body = run("nghttp", "-w", "14", "-W", "14", f"{versions.tls_url}/gallery/blob/{BIG}")
    assert body == blob(BIG)


def test_16_mib_upload_over_h2(versions: VersionsServer, tmp_path: Path) -> None:
    """RFC 9113 §5.2, the other way: the server's windows let a 16 MiB body through to the handler
    (POST /images takes up to 64 MiB) and the stored SHA-256 is the sent one's."""
    body = PNG + blob(BIG - len(PNG))
    source = tmp_path / "upload.png"
    source.write_bytes(body)
    out = curl(
        versions, "--http2", "-H", "content-type: image/png", "--data-binary", f"@{source}",
        "-w", "\n%{http_version} %{http_code}", f"{versions.tls_url}/images?targets=",
    )  # fmt: skip
    document, _, status = out.decode().rpartition("\n")
    assert status == "2 201", document
    stored = json.loads(document)
    assert (stored["bytes"], stored["sha256"]) == (BIG, hashlib.sha256(body).hexdigest())


@pytest.mark.parametrize(
    ("flag", "tls"), [("--http2", True), ("--http2-prior-knowledge", False), ("--http1.1", False)]
)
def test_event_stream_runs_to_done(versions: VersionsServer, flag: str, tls: bool) -> None:
    """WHATWG HTML §9.2: a running job's events arrive in order, one version each, up to `done`, then
    the stream ends (over HTTP/2 an END_STREAM, over HTTP/1.1 the last chunk)."""
    job = create_job(versions.url, steps=4, step_ms=100)
    out = curl(versions, flag, "-N", "--max-time", "10", f"{base(versions, tls)}/jobs/{job['id']}/events")
    events = sse_events(out)
    ids = [event_id for event_id, _ in events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert events[-1] == (7, "done")  # queued, running, 4 steps, done


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_websocket_echo(versions: VersionsServer, tls: bool) -> None:
    """RFC 6455 §5.6: text and binary messages come back unchanged from /ws/echo, over HTTP/1.1."""
    context = ssl.create_default_context(cafile=versions.ca) if tls else None
    url = f"{base(versions, tls).replace('http', 'ws', 1)}/ws/echo"
    with ws_connect(url, ssl=context, open_timeout=5) as ws:
        for message in ("hello", "é" * 1000, bytes(range(256)) * 300):
            ws.send(message)
            assert ws.recv(timeout=5) == message

"""`wirelab proxy forward` driven by the real curl: relayed http:// requests and CONNECT tunnels.

Theory of operation: an origin (the standard library's HTTP server, plain and behind TLS) runs in a
thread of this process and reports what it saw in its answers; the proxy runs as the real CLI in a
child process; curl is the client, as a user would run it. Bodies are large, so a proxy that
buffered whole bodies or broke their framing would show it in the digests.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import re
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.interop_peers import peer_tool

pytestmark = pytest.mark.interop

BIG = 12 << 20
PATTERN = bytes(range(256)) * 4096  # 1 MiB, so every body is cheap to make and to check


def big_body() -> Iterator[bytes]:
    for _ in range(BIG // len(PATTERN)):
        yield PATTERN


BIG_SHA256 = hashlib.sha256(b"".join(big_body())).hexdigest()


class Origin(http.server.BaseHTTPRequestHandler):
    """GET /big streams 12 MiB chunked; POST /echo answers the body's digest; both echo the Via seen."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Seen-Via", self.headers.get("Via", ""))
        self.end_headers()
        for piece in big_body():
            self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\n\r\n")

    def do_POST(self) -> None:
        digest, size = hashlib.sha256(), 0
        for piece in self._body():
            digest.update(piece)
            size += len(piece)
        answer = json.dumps({"sha256": digest.hexdigest(), "bytes": size, "via": self.headers["Via"]})
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())

    def _body(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding") == "chunked":
            while size := int(self.rfile.readline().split(b";")[0], 16):
                yield self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
            return
        left = int(self.headers["Content-Length"])
        while left:
            piece = self.rfile.read(min(left, 1 << 16))
            left -= len(piece)
            yield piece


def start_origin(context: ssl.SSLContext | None = None) -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def origin() -> Iterator[int]:
    yield from start_origin()


@pytest.fixture(scope="module")
def tls_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The same origin behind TLS, with a throwaway self-signed certificate (curl runs with -k)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    make = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        [peer_tool("openssl"), *make, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    yield from start_origin(context)


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    """`wirelab proxy forward` on a free port, its address read from the line it logs when ready."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wirelab", "proxy", "forward", "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    match = re.search(r"listening on (\S+)", line)
    assert match, f"the proxy did not start: {line}{process.stderr.read() if process.poll() else ''}"
    drain = threading.Thread(target=process.stderr.read, daemon=True)  # keep its pipe from filling
    drain.start()
    yield f"http://{match[1]}"
    process.terminate()
    assert process.wait(timeout=5) == 0
    drain.join(timeout=5)
    process.stderr.close()


def curl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([peer_tool("curl"), "-sS", *args], capture_output=True, timeout=30, check=False)


def test_an_http_url_is_relayed_with_via_and_its_body_streamed(
    proxy: str, origin: int, tmp_path: Path
) -> None:
    """RFC 9110 §7.6.3: a proxy adds Via both ways; the chunked body arrives whole and intact."""
    out, head = tmp_path / "body", tmp_path / "head"
    done = curl("-x", proxy, "-o", str(out), "-D", str(head), f"http://127.0.0.1:{origin}/big")
    assert done.returncode == 0, done.stderr
    headers = head.read_text().lower()
    assert "via: 1.1 wirelab" in headers
    assert "x-seen-via: 1.1 wirelab" in headers
    assert hashlib.sha256(out.read_bytes()).hexdigest() == BIG_SHA256


def test_the_client_connection_is_kept_alive(proxy: str, origin: int) -> None:
    """RFC 9112 §9.3: an HTTP/1.1 client connection persists, so curl sends its second request on it."""
    url = f"http://127.0.0.1:{origin}/big"
    done = curl("-v", "-x", proxy, "-o", "/dev/null", "-o", "/dev/null", url, url)
    assert done.returncode == 0, done.stderr
    assert b"Re-using existing connection" in done.stderr


def test_an_http_1_0_client_gets_a_body_delimited_by_close(proxy: str, origin: int, tmp_path: Path) -> None:
    """RFC 9112 §6.3 rule 8: without chunked for HTTP/1.0, the proxy ends the body by closing."""
    out, head = tmp_path / "body", tmp_path / "head"
    done = curl("-0", "-x", proxy, "-o", str(out), "-D", str(head), f"http://127.0.0.1:{origin}/big")
    assert done.returncode == 0, done.stderr
    assert "connection: close" in head.read_text().lower()
    assert hashlib.sha256(out.read_bytes()).hexdigest() == BIG_SHA256


@pytest.mark.parametrize("framing", ["Content-Length", "Transfer-Encoding: chunked"])
def test_an_upload_streams_to_the_origin(proxy: str, origin: int, tmp_path: Path, framing: str) -> None:
    """Request bodies go through in either framing (RFC 9112 §6), re-chunked by the proxy if chunked."""
    upload = tmp_path / "upload"
    upload.write_bytes(b"".join(big_body()))
    extra = ["-H", framing] if framing.startswith("Transfer") else []
    done = curl("-x", proxy, "--data-binary", f"@{upload}", *extra, f"http://127.0.0.1:{origin}/echo")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer == {"sha256": BIG_SHA256, "bytes": BIG, "via": "1.1 wirelab"}


def test_an_https_url_goes_through_a_connect_tunnel(proxy: str, tls_origin: int, tmp_path: Path) -> None:
    """RFC 9110 §9.3.6: CONNECT, a 2xx, then TLS end to end between curl and the origin."""
    out = tmp_path / "body"
    done = curl("-v", "-k", "-x", proxy, "-o", str(out), f"https://127.0.0.1:{tls_origin}/big")
    assert done.returncode == 0, done.stderr
    assert b"200 Connection Established" in done.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == BIG_SHA256


def test_proxytunnel_carries_plain_http_too(proxy: str, origin: int, tmp_path: Path) -> None:
    out = tmp_path / "body"
    done = curl("-v", "--proxytunnel", "-x", proxy, "-o", str(out), f"http://127.0.0.1:{origin}/big")
    assert done.returncode == 0, done.stderr
    assert b"CONNECT 127.0.0.1" in done.stderr
    assert hashlib.sha256(out.read_bytes()).hexdigest() == BIG_SHA256


def test_an_origin_form_request_is_refused_with_a_problem(proxy: str) -> None:
    """Asked directly (GET /), a forward proxy says what it is, in RFC 9457 problem+json."""
    done = curl("-i", f"{proxy}/")
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400")
    assert b"content-type: application/problem+json" in head
    problem = json.loads(body)
    assert problem["status"] == 400
    assert "forward proxy" in problem["detail"]


def test_an_unreachable_origin_is_502(proxy: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]  # bound, never listening: connections are refused
        done = curl("-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, f"http://127.0.0.1:{closed}/")
    assert done.stdout == b"502"


def exchange(proxy: str, data: bytes, *, shut: bool = False) -> bytes:
    """Send raw bytes to the proxy and read until it closes (or until the answer, with `shut`)."""
    host, port = proxy.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(1 << 16):
            received += chunk
        return received


def test_a_smuggling_attempt_is_refused_and_the_connection_closed(proxy: str, origin: int) -> None:
    """RFC 9112 §6.3: Content-Length and Transfer-Encoding together: 400, then close."""
    request = (
        f"POST http://127.0.0.1:{origin}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    answer = exchange(proxy, request.encode())
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.count(b"HTTP/1.1") == 1


@pytest.mark.parametrize(
    "line",
    [
        "GET https://127.0.0.1/ HTTP/1.1",
        "GET http://[::1/ HTTP/1.1",
        "GET http://127.0.0.1:99999/ HTTP/1.1",
        "GET * HTTP/1.1",
        "CONNECT 127.0.0.1 HTTP/1.1",
        "CONNECT [::1:443 HTTP/1.1",
        "CONNECT user@127.0.0.1:443 HTTP/1.1",
    ],
)
def test_targets_a_forward_proxy_cannot_follow_are_400(proxy: str, line: str) -> None:
    """https:// URLs need CONNECT (RFC 9110 §9.3.6); CONNECT needs host:port; a bad URL is the client's."""
    answer = exchange(proxy, f"{line}\r\nHost: x\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 400 "), answer


def test_a_tunnel_carries_a_half_close(proxy: str) -> None:
    """A FIN from the client reaches the origin, whose answer still comes back through the tunnel."""
    with socket.create_server(("127.0.0.1", 0)) as server:

        def count_until_eof() -> None:
            conn, _ = server.accept()
            with conn:
                total = 0
                while chunk := conn.recv(1 << 16):
                    total += len(chunk)
                conn.sendall(b"got %d" % total)

        threading.Thread(target=count_until_eof, daemon=True).start()
        port = server.getsockname()[1]
        request = f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
        answer = exchange(proxy, request + b"x" * 100_000, shut=True)
    head, _, tail = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert tail == b"got 100000"


def test_pipelined_requests_keep_alive_by_their_own_fields(proxy: str, origin: int) -> None:
    """A request's keep-alive is its own business: a later pipelined `Connection: close` must not
    end the connection before the earlier request is answered."""
    first = f"POST http://127.0.0.1:{origin}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    last = (
        f"POST http://127.0.0.1:{origin}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
        "Connection: close\r\n\r\nyo"
    )
    answer = exchange(proxy, (first + last).encode())
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:400]
    assert hashlib.sha256(b"hi").hexdigest().encode() in answer
    assert hashlib.sha256(b"yo").hexdigest().encode() in answer

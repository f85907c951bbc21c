"""Hostile input to `wirelab up --http 1.1,2,3`: malformed HTTP/2 frames and oversize request heads.

Each refusal must be the protocol's own (GOAWAY with the RFC's error code and a closed connection) or,
where a response can still be sent, 431 with an RFC 9457 problem document, as `guard` answers under
uvicorn. After each, a new client must still be served: one bad connection harms only itself.
"""

from __future__ import annotations

import contextlib
import json
import struct
import subprocess

import pytest
from h2.errors import ErrorCodes
from h2.events import ConnectionTerminated, ResponseReceived, StreamEnded
from hyperframe.frame import GoAwayFrame
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from tests.interop.conftest import VersionsServer
from tests.interop.http_versions import connect, h2_frames_until_close, port_of, read_answer, served
from tests.interop.interop_peers import peer_tool
from tests.proxy.h2_peers import PREFACE, h2_client
from wirelab.http.guard import ConnectionLimits

pytestmark = pytest.mark.interop

LIMIT = ConnectionLimits().max_head_bytes
PROBLEM = "application/problem+json"


def frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """RFC 9113 §4.1: length (24 bits), type, flags, stream identifier (31 bits), payload."""
    head = struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id)
    return head + payload


END_STREAM_AND_HEADERS = 0x5


@pytest.mark.parametrize(
    ("bad", "codes"),
    [
        pytest.param(frame(0x0, 0, 0, b"x"), {ErrorCodes.PROTOCOL_ERROR}, id="DATA-on-stream-0"),
        # §4.3 says COMPRESSION_ERROR; h2 4.x reports every HPACK decoding error as PROTOCOL_ERROR.
        pytest.param(
            frame(0x1, END_STREAM_AND_HEADERS, 1, b"\x80"),
            {ErrorCodes.COMPRESSION_ERROR, ErrorCodes.PROTOCOL_ERROR},
            id="HEADERS-with-HPACK-index-0",
        ),
        pytest.param(
            frame(0x1, END_STREAM_AND_HEADERS, 2, b"\x82\x84\x86"),
            {ErrorCodes.PROTOCOL_ERROR},
            id="HEADERS-on-an-even-stream",
        ),
        pytest.param(frame(0x4, 0, 0, bytes(5)), {ErrorCodes.FRAME_SIZE_ERROR}, id="SETTINGS-of-5-bytes"),
        pytest.param(frame(0x8, 0, 0, bytes(4)), {ErrorCodes.PROTOCOL_ERROR}, id="WINDOW_UPDATE-of-0"),
        pytest.param(
            frame(0x0, 0, 1, bytes(20_000)), {ErrorCodes.FRAME_SIZE_ERROR}, id="DATA-over-max-frame-size"
        ),
    ],
)
def test_malformed_frame_is_a_connection_error(
    versions: VersionsServer, bad: bytes, codes: set[ErrorCodes]
) -> None:
    """RFC 9113 §5.4.1: a connection error is answered with GOAWAY carrying its code (§4.2 frame
    size, §4.3 HPACK, §5.1.1 stream identifiers, §6.1 DATA, §6.5 SETTINGS, §6.9 WINDOW_UPDATE), then
    the connection is closed."""
    port = port_of(versions.url)
    with connect(port) as sock:
        sock.sendall(PREFACE + frame(0x4, 0, 0, b"") + bad)
        frames = h2_frames_until_close(sock)
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert len(goaways) == 1, frames
    assert goaways[0].error_code in codes
    assert goaways[0].last_stream_id == 0
    assert served(port)


def test_overlong_frame_is_refused_from_its_header(versions: VersionsServer) -> None:
    """RFC 9113 §4.2: a frame over SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR, knowable from its
    9-byte header; the server need not read the payload it announces."""
    port = port_of(versions.url)
    with connect(port) as sock:
        sock.settimeout(2)
        announced = b"\xff\xff\xff" + frame(0x0, 0, 1, b"")[3:]  # DATA of 16 MiB - 1, header only
        sock.sendall(PREFACE + frame(0x4, 0, 0, b"") + announced + bytes(1000))
        frames = h2_frames_until_close(sock)
    assert any(isinstance(f, GoAwayFrame) and f.error_code == ErrorCodes.FRAME_SIZE_ERROR for f in frames)


def assert_problem_431(status: int, content_type: str, body: bytes) -> None:
    """RFC 6585 §5 and RFC 9457 §3: 431 with a problem document saying which limit was passed."""
    assert status == 431, body[:200]
    assert content_type == PROBLEM
    problem = json.loads(body)
    assert problem["status"] == 431
    assert problem["title"] == "Request Header Fields Too Large"
    assert str(LIMIT) in problem["detail"]


@pytest.mark.parametrize("size", [LIMIT + 1000, 100_000, 1 << 20])
def test_oversize_head_over_http11(versions: VersionsServer, size: int) -> None:
    """A head just over the limit (whole in one read), of 100 KiB, and of 1 MiB (refused while still
    arriving, the connection then closed): 431 problem+json every time."""
    port = port_of(versions.url)
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"
    with connect(port) as sock, sock.makefile("rb") as reader:
        # Refused before the head is all sent, the answer is already on its way.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        answer = read_answer(reader)
    assert_problem_431(answer.status, answer.fields["content-type"], answer.body)
    assert served(port)


def test_malformed_head_over_http11(versions: VersionsServer) -> None:
    """RFC 9112 §5: a field line without a colon is a 400, explained in a problem document."""
    port = port_of(versions.url)
    with connect(port) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")
        answer = read_answer(reader)
    assert (answer.status, answer.fields["content-type"]) == (400, PROBLEM)
    assert answer.json()["status"] == 400
    assert answer.fields["connection"] == "close"
    assert served(port)


@pytest.mark.parametrize(("flag", "tls"), [("--http2", True), ("--http2-prior-knowledge", False)])
def test_oversize_head_over_h2_with_curl(versions: VersionsServer, flag: str, tls: bool) -> None:
    """RFC 9113 §10.5.1: a server may answer a header section it will not handle with 431. 60 KiB,
    since curl's nghttp2 will not send a header block over 64 KiB."""
    url = f"{versions.tls_url if tls else versions.url}/healthz"
    argv = [peer_tool("curl"), "-sS", "--cacert", str(versions.ca), flag, "-H", f"X-Big: {'a' * 60_000}"]
    argv += ["-w", "\n%{http_version} %{http_code} %{content_type}", url]
    done = subprocess.run(argv, capture_output=True, timeout=15, check=False)
    assert done.returncode == 0, done.stderr
    body, _, seen = done.stdout.rpartition(b"\n")
    version, status, content_type = seen.decode().split()
    assert version == "2"
    assert_problem_431(int(status), content_type, body)
    assert served(port_of(versions.url))


async def test_oversize_head_over_h2_keeps_the_connection(versions: VersionsServer) -> None:
    """RFC 9113 §10.5.1: a 100 KiB header list is decoded (the HPACK state stays in step) and refused
    431 on its stream; the next request on the same connection is served."""
    async with h2_client(port_of(versions.url)) as client:
        big = client.request(b"/healthz", fields=[(b"x-big", b"a" * 100_000)])
        await client.flush()
        response = await client.next(ResponseReceived, big)
        await client.next(StreamEnded, big)
        fields = dict(response.headers)
        assert_problem_431(int(fields[b":status"]), fields[b"content-type"].decode(), client.bodies[big])
        small = client.request(b"/healthz")
        await client.flush()
        assert dict((await client.next(ResponseReceived, small)).headers)[b":status"] == b"200"


async def test_header_list_past_what_is_decoded_ends_the_connection(versions: VersionsServer) -> None:
    """RFC 9113 §10.5.1: past four times the limit the server stops decoding, which loses the HPACK
    state, so the connection must end: GOAWAY ENHANCE_YOUR_CALM (§5.4.1), then the close."""
    async with h2_client(port_of(versions.url)) as client:
        client.request(b"/healthz", fields=[(b"x-big", b"a" * (LIMIT * 4 + 1000))])
        await client.flush()
        ended = await client.next(ConnectionTerminated)
        assert ended.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert await client.closed_by_server()
    assert served(port_of(versions.url))


def test_oversize_websocket_handshake(versions: VersionsServer) -> None:
    """RFC 6455 §4.2.2: a handshake the server will not accept gets an HTTP answer; here the same
    431 problem+json as any other request over the head limit."""
    url = f"{versions.url.replace('http', 'ws', 1)}/ws/echo"
    with (
        pytest.raises(InvalidStatus) as refused,
        ws_connect(url, additional_headers={"X-Big": "a" * (LIMIT + 1000)}, open_timeout=5),
    ):
        pass
    response = refused.value.response
    assert_problem_431(response.status_code, response.headers["content-type"], response.body or b"")
    assert served(port_of(versions.url))

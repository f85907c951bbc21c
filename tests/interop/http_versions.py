"""Raw-socket helpers for the tests of `wirelab up --http 1.1,2,3` (test_http_versions*.py).

Theory of operation: what the peers (curl, nghttp, h2load) cannot do on cue, a socket does: write
several requests in one go, send a head of any size, send a malformed HTTP/2 frame. The readers here
parse only what the tests check (status, fields, a body framed by Content-Length, chunks or the close),
and every read has a deadline, so a server that stays silent fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from hyperframe.frame import Frame

from tests.proxy.h2_peers import PIECE

__all__ = [
    "Answer",
    "blob",
    "connect",
    "h2_frames_until_close",
    "port_of",
    "read_answer",
    "served",
]

TIMEOUT_S = 5.0


def blob(size: int) -> bytes:
    """What /gallery/blob/`size` must be: byte i is i % 256."""
    return (PIECE * (size // len(PIECE) + 1))[:size]


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    sock.settimeout(TIMEOUT_S)
    return sock


@dataclass(frozen=True)
class Answer:
    status: int
    version: str
    fields: dict[str, str]
    body: bytes
    chunks: list[int]
    """The chunk sizes as framed on the wire (empty unless Transfer-Encoding: chunked)."""

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(reader: BinaryIO) -> Answer:
    """One HTTP/1.x response from `reader` (a socket's makefile("rb")), its body de-framed."""
    version, status, *_ = reader.readline().decode("latin-1").split(" ", 2)
    fields: dict[str, str] = {}
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        fields[name.strip().lower()] = value.strip()
    chunks: list[int] = []
    if fields.get("transfer-encoding") == "chunked":
        body = bytearray()
        while size := int(reader.readline().split(b";")[0], 16):
            chunks.append(size)
            body += reader.read(size)
            assert reader.readline() == b"\r\n", "a chunk's data must end with CRLF"
        assert reader.readline() == b"\r\n", "no trailer fields are sent"
        return Answer(int(status), version, fields, bytes(body), chunks)
    if "content-length" in fields:
        return Answer(int(status), version, fields, reader.read(int(fields["content-length"])), chunks)
    return Answer(int(status), version, fields, reader.read(), chunks)


def served(port: int) -> bool:
    """Whether a new client on `port` is answered 200 at /healthz: the server survived."""
    with connect(port) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = read_answer(reader)
    return answer.status == 200 and answer.json()["status"] == "ok"


def h2_frames_until_close(sock: socket.socket) -> list[Frame]:
    """Every HTTP/2 frame the server sends until it closes the connection."""
    data = bytearray()
    while chunk := sock.recv(1 << 16):
        data += chunk
    frames = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        del data[: 9 + length]
    return frames

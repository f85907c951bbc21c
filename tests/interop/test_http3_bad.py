"""Hostile input at `wirelab up`'s HTTP/3: datagrams that are not QUIC, or look like it and are not,
and request heads over the limit. The server stays up, keeps no state for the garbage, and serves.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import struct
from collections.abc import Iterator
from typing import Any

import pytest

from tests.interop.conftest import VersionsServer, free_tcp_and_udp_port
from tests.interop.h3_peers import curl_h3
from wirelab.http.h3server import serve_h3

pytestmark = pytest.mark.interop


def long_header(version: int, size: int, rng: random.Random) -> bytes:
    """A long-header Initial (RFC 9000 §17.2.2) of `size` bytes for `version`, its payload junk."""
    dcid, scid = rng.randbytes(8), rng.randbytes(8)
    head = bytes([0xC3]) + struct.pack("!I", version) + bytes([8]) + dcid + bytes([8]) + scid + b"\x00"
    rest = size - len(head) - 2
    return head + struct.pack("!H", 0x4000 | rest) + rng.randbytes(rest)


def garbage(rng: random.Random) -> Iterator[tuple[str, bytes]]:
    for size in (1, 7, 64, 600, 1199, 1200, 1350):
        yield f"{size} random bytes", rng.randbytes(size)
    for size in (30, 1200):
        yield (
            f"short header, unknown connection ID, {size} bytes",
            bytes([0x40 | 0x01]) + rng.randbytes(size),
        )
    yield "Initial of version 0x1a2a3a4a", long_header(0x1A2A3A4A, 1200, rng)
    yield "Initial of version 1, junk payload, 1200 bytes", long_header(1, 1200, rng)
    yield "Initial of version 1, junk payload, 1400 bytes", long_header(1, 1400, rng)
    yield "Initial of version 1 under 1200 bytes", long_header(1, 600, rng)


def test_garbage_datagrams_are_dropped_and_the_server_serves_on(versions: VersionsServer) -> None:
    """RFC 9000 §5.2.2 and §6: what is not a packet of a connection is dropped; an unknown version is
    answered with Version Negotiation (version 0) and nothing else; then a real client gets 200."""
    rng = random.Random(9)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(("127.0.0.1", versions.tls_port))
        sock.settimeout(0.3)
        for _ in range(5):
            for _label, datagram in garbage(rng):
                sock.send(datagram)
        answers = []
        with pytest.raises(TimeoutError):
            while True:
                answers.append(sock.recv(65535))
    assert answers, "the unknown versions got no Version Negotiation"
    assert all(answer[0] & 0x80 and answer[1:5] == b"\x00\x00\x00\x00" for answer in answers)
    assert versions.process.process.poll() is None
    assert curl_h3(versions.tls_url + "/healthz", ca=versions.ca).status == 200


async def test_junk_initials_leave_no_connection_behind(versions: VersionsServer) -> None:
    """A 1200-byte datagram that parses as a version 1 Initial makes aioquic's server create a
    connection before anything is decrypted; h3server forgets one that decrypted nothing at once
    instead of holding it for the 60 s idle timeout. In-process, to see the tables."""
    leaf = versions.process.data_dir / "ca" / "leaf"
    port = free_tcp_and_udp_port()
    server = await serve_h3(
        _ok,
        host="127.0.0.1",
        port=port,
        certificate=(leaf / "localhost.pem", leaf / "localhost-key.pem"),
        max_head_bytes=32 << 10,
    )
    try:
        rng = random.Random(3)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(50):
                sock.sendto(long_header(1, 1200 + rng.randrange(200), rng), ("127.0.0.1", port))
            sock.sendto(os.urandom(1300), ("127.0.0.1", port))
        await asyncio.sleep(0.3)  # loopback: ample for the server's loop to read them all
        assert server._quic is not None
        assert server.connections == set()
        assert server._quic._protocols == {}  # aioquic's table, by connection ID (internal)
    finally:
        await server.close(1)


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("size", [40 << 10, 100 << 10])
def test_a_request_head_over_the_limit_is_431_and_the_connection_serves_on(
    versions: VersionsServer, size: int
) -> None:
    """RFC 9114 §4.2.2 and RFC 6585 §5: 431 as problem+json, whether the section decodes (40 KiB) or
    is refused undecoded (100 KiB: QPACK's decoder could not take it, and a decoding failure would
    close the whole connection); the server answers the next request."""
    response = curl_h3(versions.tls_url + "/healthz", ca=versions.ca, headers=[f"X-Big: {'a' * size}"])
    assert response.status == 431
    assert "content-type: application/problem+json" in response.headers.lower()
    assert b'"status": 431' in response.body
    assert curl_h3(versions.tls_url + "/healthz", ca=versions.ca).status == 200

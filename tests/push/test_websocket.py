"""WebSocket push and echo over real connections (RFC 6455), including failure modes."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.helpers import create_job, publish_pipelined, wait_done, wait_idle
from wirelab.testing import ServerProcess


def _ws(server: ServerProcess, path: str = "/ws", **options: Any) -> ClientConnection:
    return connect(f"ws://127.0.0.1:{server.port}{path}", compression=None, open_timeout=5, **options)


def _messages(ws: ClientConnection, until_event: str = "done") -> Iterator[dict[str, Any]]:
    while True:
        message: dict[str, Any] = json.loads(ws.recv(timeout=10))
        yield message
        if message.get("event") == until_event:
            return


def test_a_subscription_delivers_every_version_in_order(server: ServerProcess) -> None:
    job = create_job(server.url, steps=4, step_ms=20)
    with _ws(server) as ws:
        ws.send(json.dumps({"op": "subscribe", "topic": f"jobs/{job['id']}", "after": 0}))
        messages = list(_messages(ws))
    assert [m["version"] for m in messages] == list(range(1, len(messages) + 1))
    assert {m["topic"] for m in messages} == {f"jobs/{job['id']}"}
    assert all(m["data"]["version"] == m["version"] for m in messages)
    assert messages[-1]["data"]["state"] == "done"


def test_resume_after_a_drop_loses_and_repeats_nothing(server: ServerProcess) -> None:
    job = create_job(server.url, steps=6, step_ms=60)
    topic = f"jobs/{job['id']}"
    with _ws(server) as ws:
        ws.send(json.dumps({"op": "subscribe", "topic": topic, "after": 0}))
        first = [json.loads(ws.recv(timeout=5)) for _ in range(3)]
    with _ws(server) as ws:
        ws.send(json.dumps({"op": "subscribe", "topic": topic, "after": first[-1]["version"]}))
        rest = list(_messages(ws))
    versions = [m["version"] for m in first + rest]
    assert versions == list(range(1, len(versions) + 1))


def test_bad_messages_get_an_error_and_the_socket_stays(server: ServerProcess) -> None:
    job = create_job(server.url, steps=1, step_ms=0)
    wait_done(server.url, job["id"])
    with _ws(server) as ws:
        for bad in ["not json", '{"op": "shout", "topic": "logins"}', b"\x00binary"]:
            ws.send(bad)
            error = json.loads(ws.recv(timeout=5))["error"]
            assert error["status"] == 400 and error["detail"]
        ws.send(json.dumps({"op": "subscribe", "topic": "jobs/0123456789abcdef"}))
        assert json.loads(ws.recv(timeout=5))["error"]["status"] == 404
        ws.send(json.dumps({"op": "subscribe", "topic": "weather"}))
        assert json.loads(ws.recv(timeout=5))["error"]["status"] == 404
        ws.send(json.dumps({"op": "subscribe", "topic": f"jobs/{job['id']}"}))
        assert json.loads(ws.recv(timeout=5))["event"] == "done"  # still usable


def test_logins_reach_every_subscriber_and_unsubscribe_stops_them(server: ServerProcess) -> None:
    head = httpx.post(f"{server.url}/logins", json={"user": "warm-up"}).json()["version"]
    with _ws(server) as a, _ws(server) as b:
        for ws in (a, b):
            ws.send(json.dumps({"op": "subscribe", "topic": "logins", "after": head}))
        _wait_followers(server.url, 2)
        version = httpx.post(f"{server.url}/logins", json={"user": "ada"}).json()["version"]
        for ws in (a, b):
            message = json.loads(ws.recv(timeout=5))
            assert message["version"] == version and message["data"]["user"] == "ada"
        b.send(json.dumps({"op": "unsubscribe", "topic": "logins"}))
        _wait_followers(server.url, 1, exactly=True)
        httpx.post(f"{server.url}/logins", json={"user": "grace"})
        assert json.loads(a.recv(timeout=5))["data"]["user"] == "grace"
        with pytest.raises(TimeoutError):
            b.recv(timeout=0.3)
    assert wait_idle(server.url)["followers"] == 0


def test_subscribing_again_replaces_the_subscription(server: ServerProcess) -> None:
    """Each version reaches a socket once per topic, however often the client subscribes to it."""
    head = httpx.post(f"{server.url}/logins", json={"user": "warm-up"}).json()["version"]
    with _ws(server) as ws:
        for _ in range(2):
            ws.send(json.dumps({"op": "subscribe", "topic": "logins", "after": head - 1}))
            assert json.loads(ws.recv(timeout=5))["version"] == head  # caught up from `after`
        ws.send("not json")  # its answer tells that the server has read everything before it
        assert "error" in json.loads(ws.recv(timeout=5))
        version = httpx.post(f"{server.url}/logins", json={"user": "ada"}).json()["version"]
        assert json.loads(ws.recv(timeout=5))["version"] == version
        with pytest.raises(TimeoutError):
            ws.recv(timeout=0.3)


def test_an_oversized_message_closes_with_1009(server: ServerProcess) -> None:
    """RFC 6455 §7.4.1: 1009 means a message too big to process."""
    with _ws(server, max_size=None) as ws:
        ws.send("x" * ((1 << 20) + 1))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


def test_echo_returns_text_as_text_and_binary_as_binary(server: ServerProcess) -> None:
    """RFC 6455 §5.6: the opcode (text or binary) is part of the message."""
    with _ws(server, "/ws/echo") as ws:
        ws.send("héllo")
        assert ws.recv(timeout=5) == "héllo"
        ws.send(b"\x00\xff")
        assert ws.recv(timeout=5) == b"\x00\xff"


def test_closing_mid_subscription_leaves_no_follower(server: ServerProcess) -> None:
    job = create_job(server.url, steps=100, step_ms=50)
    with _ws(server) as ws:
        ws.send(json.dumps({"op": "subscribe", "topic": f"jobs/{job['id']}"}))
        ws.recv(timeout=5)
        assert httpx.get(f"{server.url}/healthz").json()["feed"]["followers"] >= 1
        ws.socket.shutdown(socket.SHUT_RDWR)  # an abrupt drop, no closing handshake
    assert wait_idle(server.url)["followers"] == 0
    httpx.delete(f"{server.url}/jobs/{job['id']}")


def test_a_subscriber_that_stops_reading_is_dropped_and_can_resume(tmp_path: Path) -> None:
    """Bounded memory: a stalled reader is cut off once it lags by more than --max-lag versions."""
    with ServerProcess(tmp_path, "--max-lag", "20") as server:
        head = httpx.post(f"{server.url}/logins", json={"user": "start"}).json()["version"]
        with _stalled_subscriber(server.port, "logins", head) as stalled:
            _wait_followers(server.url, 1)
            publish_pipelined(server.port, count=16000)  # ~5 MiB, past every socket buffer
            assert _followers(server.url) == 0, "the stalled subscriber was never dropped"
            messages = [json.loads(payload) for payload in _read_text_frames(stalled)]
        versions = [m["version"] for m in messages if "version" in m]
        assert versions == list(range(head + 1, head + 1 + len(versions)))  # nothing skipped
        resume_after = versions[-1] if versions else head
        if "lagged" in messages[-1]:  # the notice only passes if the buffers had room for it
            assert messages[-1]["resume_after"] == resume_after
        with _ws(server) as again:
            again.send(json.dumps({"op": "subscribe", "topic": "logins", "after": resume_after}))
            assert json.loads(again.recv(timeout=5))["version"] == resume_after + 1


@contextlib.contextmanager
def _stalled_subscriber(port: int, topic: str, after: int) -> Iterator[socket.socket]:
    """A hand-made WebSocket client (RFC 6455 §4.1, §5.2) that subscribes, then reads nothing."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101")
    payload = json.dumps({"op": "subscribe", "topic": topic, "after": after}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    try:
        yield sock
    finally:
        sock.close()


def _read_text_frames(sock: socket.socket) -> Iterator[bytes]:
    """Server frames until a close frame or the end of the stream; they are never masked (§5.1)."""
    sock.settimeout(10)
    reader = sock.makefile("rb")
    while len(header := reader.read(2)) == 2:
        opcode, length = header[0] & 0x0F, header[1] & 0x7F
        if length == 126:
            length = struct.unpack("!H", reader.read(2))[0]
        elif length == 127:
            length = struct.unpack("!Q", reader.read(8))[0]
        payload = reader.read(length)
        if opcode == 0x8:
            assert struct.unpack("!H", payload[:2])[0] == 1008
            return
        if opcode == 0x1:
            yield payload


def _followers(url: str) -> int:
    count: int = httpx.get(f"{url}/healthz").json()["feed"]["followers"]
    return count


def _wait_followers(url: str, count: int, *, exactly: bool = False) -> None:
    deadline = time.monotonic() + 5
    while (_followers(url) != count) if exactly else (_followers(url) < count):
        assert time.monotonic() < deadline, "subscribers did not register"
        time.sleep(0.02)

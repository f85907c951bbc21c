"""Connection limits of `wirelab up` (wirelab.http.guard) against hostile clients over real sockets:
slow heads cut, big heads refused, stalled bodies cut with their bytes kept, a connection cap that
answers 503 and recovers, and the long-lived streams none of that may touch."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from wirelab.bench.slowloris import SlowlorisPlan, flood
from wirelab.errors import ConfigError
from wirelab.http.guard import Burst, ConnectionLimits
from wirelab.testing import ServerProcess


def test_a_burst_logs_its_first_event_and_then_its_total() -> None:
    burst = Burst(quiet_s=5.0)
    assert burst.hit(now=100.0)
    assert not burst.hit(now=101.0)
    assert not burst.hit(now=104.0)
    assert burst.end(now=108.9) is None  # 4.9 s quiet: still the same burst
    assert burst.end(now=109.0) == 3
    assert burst.end(now=200.0) is None  # reported once
    assert burst.hit(now=300.0)  # a new burst is logged again


@pytest.mark.parametrize(
    "bad",
    [
        {"header_timeout_s": 0},
        {"body_timeout_s": -1},
        {"idle_timeout_s": 0},
        {"max_head_bytes": 100},
        {"max_connections": 0},
    ],
)
def test_limits_name_the_bad_setting(bad: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match=next(iter(bad))):
        ConnectionLimits(**bad)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir: Path = tmp_path_factory.mktemp("guarded")
    args = ("--header-timeout", "2", "--body-timeout", "1", "--idle-timeout", "1", "--heartbeat", "0.5")
    with ServerProcess(data_dir, *args) as process:
        yield process


def _read_answer(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


def _problem(answer: bytes, status: int) -> dict[str, object]:
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"content-type: application/problem+json" in head
    document: dict[str, object] = json.loads(body)
    assert document["status"] == status
    return document


def test_a_slow_head_is_answered_408_at_the_deadline(guarded: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        answer = _read_answer(sock)
    assert 1.9 < time.monotonic() - started < 4
    assert "2.0 s" in str(_problem(answer, 408)["detail"])


def test_a_silent_connection_is_closed_without_an_answer(guarded: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        assert _read_answer(sock) == b""


def test_a_head_over_the_limit_is_431(guarded: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"a" * 40_000 + b"\r\n\r\n")
        assert "32768-byte limit" in str(_problem(_read_answer(sock), 431)["detail"])
    assert httpx.get(f"{guarded.url}/healthz").status_code == 200


def test_an_idle_keep_alive_connection_is_closed(guarded: ServerProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", guarded.port, timeout=5)
    connection.request("GET", "/healthz")
    response = connection.getresponse()
    assert response.status == 200
    response.read()
    assert connection.sock is not None  # kept alive
    started = time.monotonic()
    assert connection.sock.recv(1) == b""
    assert 0.9 < time.monotonic() - started < 3
    connection.close()


def test_a_stalled_tus_patch_is_cut_and_keeps_what_arrived(guarded: ServerProcess) -> None:
    tus = {"tus-resumable": "1.0.0"}
    created = httpx.post(f"{guarded.url}/uploads/", headers={**tus, "upload-length": str(1 << 20)})
    assert created.status_code == 201, created.text
    location = created.headers["location"]
    path = location if location.startswith("/") else httpx.URL(location).path
    sent = 300 * 1024
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        sock.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\nUpload-Offset: 0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nContent-Length: {1 << 20}\r\n\r\n".encode()
            + b"\xff\xd8\xff"
            + b"\x01" * (sent - 3)  # a JPEG's signature, or it is refused as no image
        )
        started = time.monotonic()
        _read_answer(sock)  # the server cuts the connection: EOF (or a reset)
        waited = time.monotonic() - started
    assert waited < 4
    head = httpx.head(f"{guarded.url}{path}", headers=tus)
    assert head.headers["upload-offset"] == str(sent)


def test_long_lived_streams_outlive_every_deadline(guarded: ServerProcess) -> None:
    """SSE heartbeats and a long poll run past the head (2 s), body (1 s) and idle (1 s) limits."""
    with httpx.Client(timeout=10) as client:
        started = time.monotonic()
        with client.stream("GET", f"{guarded.url}/topics/logins/events") as events:
            lines = []
            for line in events.iter_lines():
                lines.append(line)
                if time.monotonic() - started > 3.5:
                    break
        assert sum(line.startswith(":") for line in lines) >= 5  # heartbeats every 0.5 s, still open
        version = client.post(f"{guarded.url}/logins", json={"user": "ada"}).json()["version"]
        started = time.monotonic()
        poll = client.get(f"{guarded.url}/topics/logins", params={"after": version, "wait": 3})
        assert poll.status_code in (200, 204), poll.text
        assert time.monotonic() - started > 2.9


def test_a_slow_head_flood_is_cut_while_others_are_served(tmp_path: Path) -> None:
    """Thousands of slow-loris connections: an ordinary client is answered fast throughout, and every
    slow one is closed by the server at the head deadline (counted from the client side)."""
    plan = SlowlorisPlan(connections=3000, header_timeout_s=3)
    with ServerProcess(tmp_path, "--header-timeout", "3") as server:
        descriptors = psutil.Process(server.pid).num_fds()
        flooded = asyncio.run(flood(server.port, plan))
        time.sleep(0.5)
        assert psutil.Process(server.pid).num_fds() <= descriptors + 2  # no socket left behind
    row = flooded.row(plan.connections)
    assert row["cut"] == plan.connections, row
    assert 3 <= row["last_cut_s"] < 8, row
    assert row["probe_failures"] == 0 and row["probes"] > 50, row
    assert row["probe_p99_ms"] < 50, row


def test_past_the_connection_cap_new_clients_get_503_and_the_service_recovers(tmp_path: Path) -> None:
    cap = 50
    with ServerProcess(tmp_path, "--max-connections", str(cap), "--header-timeout", "60") as server:
        held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(cap)]
        time.sleep(0.3)
        refused = []
        for _ in range(200):
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                refused.append(_read_answer(sock))
        for answer in refused:
            assert _problem(answer, 503)["title"] == "Service Unavailable"
            assert b"\r\nretry-after: 1\r\n" in answer
        for sock in held:
            sock.close()
        deadline = time.monotonic() + 5
        while (status := _healthz_status(server.url)) != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status == 200
        log = server.log()
    assert log.count("at the cap") == 1, log  # once per burst, not once per connection


def _healthz_status(url: str) -> int:
    return httpx.get(f"{url}/healthz").status_code

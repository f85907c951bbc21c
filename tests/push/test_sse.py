"""Server-Sent Events over real connections (WHATWG HTML §9.2)."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import create_job, publish_pipelined, wait_done, wait_idle
from wirelab.proto.sse import Comment, Retry, ServerSentEvent, SSEDecoder
from wirelab.testing import ServerProcess


def _read_stream(url: str, headers: dict[str, str] | None = None) -> list[Any]:
    items: list[Any] = []
    decoder = SSEDecoder()
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_raw():
            items += decoder.receive_data(chunk)
    return items


def test_a_job_stream_carries_every_version_then_ends(server: ServerProcess) -> None:
    """§9.2.6: id is the version, event the kind of change, data the snapshot; a retry hint first."""
    job = create_job(server.url, steps=3, step_ms=30)
    items = _read_stream(f"{server.url}/jobs/{job['id']}/events", {"last-event-id": "0"})
    assert isinstance(items[0], Retry)
    events = [i for i in items if isinstance(i, ServerSentEvent)]
    assert [int(e.id) for e in events] == list(range(1, len(events) + 1))
    assert [e.event for e in events] == ["progress"] * (len(events) - 1) + ["done"]
    assert all(json.loads(e.data)["version"] == int(e.id) for e in events)


def test_resume_with_last_event_id_or_after_loses_and_repeats_nothing(server: ServerProcess) -> None:
    job = create_job(server.url, steps=3, step_ms=0)
    wait_done(server.url, job["id"])
    url = f"{server.url}/jobs/{job['id']}/events"
    everything = [
        int(i.id) for i in _read_stream(url, {"last-event-id": "0"}) if isinstance(i, ServerSentEvent)
    ]
    resumed = [
        int(i.id) for i in _read_stream(url, {"last-event-id": "3"}) if isinstance(i, ServerSentEvent)
    ]
    via_query = [int(i.id) for i in _read_stream(url + "?after=4") if isinstance(i, ServerSentEvent)]
    latest_only = [int(i.id) for i in _read_stream(url) if isinstance(i, ServerSentEvent)]
    assert resumed == everything[3:]
    assert via_query == everything[4:]
    assert latest_only == everything[-1:]


def test_an_idle_stream_carries_heartbeat_comments(server: ServerProcess) -> None:
    """§9.2.6: lines starting with a colon are comments; we send them while idle (every 0.5 s here)."""
    job = create_job(server.url, steps=2, step_ms=1200)
    items = _read_stream(f"{server.url}/jobs/{job['id']}/events")
    assert any(isinstance(i, Comment) for i in items)


def test_bad_last_event_id_and_unknown_jobs_are_problems(server: ServerProcess) -> None:
    job = create_job(server.url, steps=1, step_ms=0)
    bad = httpx.get(f"{server.url}/jobs/{job['id']}/events", headers={"last-event-id": "abc"})
    assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    missing = httpx.get(f"{server.url}/jobs/0123456789abcdef/events")
    assert missing.status_code == 404 and missing.json()["title"] == "Not Found"


def test_logins_reach_every_sse_subscriber(server: ServerProcess) -> None:
    head = httpx.post(f"{server.url}/logins", json={"user": "warm-up"}).json()["version"]
    socks = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    try:
        request = f"GET /topics/logins/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {head}\r\n\r\n"
        for sock in socks:
            sock.sendall(request.encode())
        _wait_followers(server.url, 3)
        version = httpx.post(f"{server.url}/logins", json={"user": "ada"}).json()["version"]
        for sock in socks:
            received = _recv_until(sock, b'"user":"ada"')
            assert f"id: {version}\nevent: login\n".encode() in received
            assert b"warm-up" not in received
    finally:
        for sock in socks:
            sock.close()
    assert wait_idle(server.url)["followers"] == 0


def test_a_client_that_disconnects_mid_stream_leaves_no_follower(server: ServerProcess) -> None:
    job = create_job(server.url, steps=50, step_ms=100)
    with httpx.stream("GET", f"{server.url}/jobs/{job['id']}/events", timeout=10) as response:
        chunks = response.iter_raw()  # held open: leaving a for loop would close the stream
        while b"id: " not in next(chunks):
            pass
        assert httpx.get(f"{server.url}/healthz").json()["feed"]["followers"] >= 1
    assert wait_idle(server.url) == {**wait_idle(server.url), "waiters": 0, "followers": 0}
    httpx.delete(f"{server.url}/jobs/{job['id']}")


def test_a_stream_that_stops_reading_is_dropped_and_can_resume(tmp_path: Path) -> None:
    """Bounded memory: a stalled SSE reader is cut off once it lags by more than --max-lag versions."""
    with ServerProcess(tmp_path, "--max-lag", "20") as server:
        head = httpx.post(f"{server.url}/logins", json={"user": "start"}).json()["version"]
        with socket.socket() as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.connect(("127.0.0.1", server.port))
            stalled.sendall(
                f"GET /topics/logins/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {head}\r\n\r\n".encode()
            )
            _wait_followers(server.url, 1)
            publish_pipelined(server.port, count=16000)
            assert httpx.get(f"{server.url}/healthz").json()["feed"]["followers"] == 0
            received = _recv_to_end(stalled)
        versions = [int(v) for v in re.findall(rb"\nid: (\d+)\n", received)]
        assert versions == list(range(head + 1, head + 1 + len(versions)))  # nothing skipped
        resume = f"{server.url}/topics/logins/events"
        with httpx.stream("GET", resume, headers={"last-event-id": str(versions[-1])}) as response:
            decoder, first = SSEDecoder(), None
            for chunk in response.iter_raw():
                events = [e for e in decoder.receive_data(chunk) if isinstance(e, ServerSentEvent)]
                if events:
                    first = events[0]
                    break
        assert first is not None and int(first.id) == versions[-1] + 1


def _recv_to_end(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    data = b""
    while chunk := sock.recv(1 << 16):
        data += chunk
    return data


def _wait_followers(url: str, count: int) -> None:
    deadline = time.monotonic() + 5
    while httpx.get(f"{url}/healthz").json()["feed"]["followers"] < count:
        assert time.monotonic() < deadline, "subscribers did not register"
        time.sleep(0.02)


def _recv_until(sock: socket.socket, marker: bytes) -> bytes:
    sock.settimeout(5)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, "the stream ended early"
        data += chunk
    return data

"""Small helpers shared by the tests that talk to real servers, engines and peers."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, NoReturn

import httpx
import pytest


def create_job(url: str, steps: int = 5, step_ms: int = 50) -> dict[str, Any]:
    response = httpx.post(f"{url}/jobs", json={"kind": "demo", "steps": steps, "step_ms": step_ms})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_done(url: str, job_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot: dict[str, Any] = httpx.get(f"{url}/jobs/{job_id}").json()
        if snapshot["state"] in ("done", "failed", "canceled"):
            return snapshot
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not end within {timeout}s")


def feed_counts(url: str) -> dict[str, int]:
    counts: dict[str, int] = httpx.get(f"{url}/healthz").json()["feed"]
    return counts


def wait_idle(url: str, timeout: float = 5) -> dict[str, int]:
    """The server's waiters and followers return to zero once clients have gone."""
    deadline = time.monotonic() + timeout
    counts = feed_counts(url)
    while (counts["waiters"] or counts["followers"]) and time.monotonic() < deadline:
        time.sleep(0.02)
        counts = feed_counts(url)
    return counts


def publish_pipelined(port: int, *, count: int) -> None:
    """Many logins on one keep-alive connection, written at once, answers read after."""
    body = json.dumps({"user": "x" * 250}).encode()
    request = (
        b"POST /logins HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(60)
        sock.sendall(request * count)
        answered = 0
        while answered < count:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed the publishing connection"
            answered += chunk.count(b"HTTP/1.1 202")


def unavailable(message: str) -> NoReturn:
    """A service or peer this test needs is missing: skip with the reason, but fail under CI=true,
    where `.ci/run` and the machine provide everything."""
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)

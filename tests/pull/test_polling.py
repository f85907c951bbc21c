"""Request/response and long polling over real HTTP connections to a running server."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from tests.helpers import create_job, wait_done, wait_idle
from wirelab.testing import ServerProcess


def test_get_answers_the_latest_snapshot(server: ServerProcess) -> None:
    job = create_job(server.url, steps=2, step_ms=10)
    done = wait_done(server.url, job["id"])
    response = httpx.get(f"{server.url}/jobs/{job['id']}")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == done
    assert set(done) >= {"id", "kind", "state", "progress", "version", "created_at", "updated_at"}


def test_long_poll_answers_each_next_version_as_soon_as_it_exists(server: ServerProcess) -> None:
    job = create_job(server.url, steps=4, step_ms=100)
    versions, after = [], 0
    with httpx.Client(base_url=server.url, timeout=10) as client:
        while True:
            started = time.monotonic()
            snapshot = client.get(f"/jobs/{job['id']}", params={"after": after, "wait": 5}).json()
            assert time.monotonic() - started < 1  # it answered on the event, not on the timeout
            assert snapshot["version"] == after + 1
            versions.append(snapshot["version"])
            after = snapshot["version"]
            if snapshot["state"] == "done":
                break
    assert versions == list(range(1, len(versions) + 1))


def test_long_poll_times_out_with_the_unchanged_snapshot(server: ServerProcess) -> None:
    job = create_job(server.url, steps=2, step_ms=10_000)
    now = _running(server.url, job["id"])
    started = time.monotonic()
    response = httpx.get(f"{server.url}/jobs/{job['id']}", params={"after": now["version"], "wait": 0.3})
    assert 0.25 < time.monotonic() - started < 2
    assert response.json() == now
    httpx.delete(f"{server.url}/jobs/{job['id']}")


def test_long_poll_of_an_ended_job_answers_at_once(server: ServerProcess) -> None:
    """Nothing can follow the final version, so waiting for it would only waste the client's time."""
    job = create_job(server.url, steps=1, step_ms=0)
    done = wait_done(server.url, job["id"])
    started = time.monotonic()
    response = httpx.get(f"{server.url}/jobs/{job['id']}", params={"after": done["version"], "wait": 30})
    assert time.monotonic() - started < 1
    assert response.json() == done


def _running(url: str, job_id: str) -> dict[str, Any]:
    """The snapshot once the job runs (its first step is far away)."""
    snapshot: dict[str, Any] = httpx.get(f"{url}/jobs/{job_id}", params={"after": 1, "wait": 5}).json()
    assert snapshot["state"] == "running"
    return snapshot


@pytest.mark.parametrize(
    "params",
    [{"after": "x"}, {"after": "-1"}, {"after": "1", "wait": "soon"}, {"after": "1", "wait": "-2"}],
)
def test_bad_after_or_wait_is_a_400_problem(server: ServerProcess, params: dict[str, str]) -> None:
    job = create_job(server.url, steps=1, step_ms=0)
    response = httpx.get(f"{server.url}/jobs/{job['id']}", params=params)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 400


def test_a_long_poll_whose_client_hangs_up_leaves_no_waiter(server: ServerProcess) -> None:
    job = create_job(server.url, steps=2, step_ms=10_000)
    now = _running(server.url, job["id"])
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        path = f"/jobs/{job['id']}?after={now['version']}&wait=30"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.2)
        assert httpx.get(f"{server.url}/healthz").json()["feed"]["waiters"] >= 1
    assert wait_idle(server.url)["waiters"] == 0
    httpx.delete(f"{server.url}/jobs/{job['id']}")

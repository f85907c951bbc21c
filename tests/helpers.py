"""Small helpers shared by the tests that talk to a real server."""

from __future__ import annotations

import time
from typing import Any

import httpx


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

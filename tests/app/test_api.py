"""The HTTP contract and its errors (RFC 9457 problem details) over a real connection."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import create_job, wait_done
from wirelab.testing import ServerProcess


def _problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """RFC 9457 §3: a problem document names its type, title, status and a detail for humans."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["title"] and body["detail"] and body["type"]
    return body


def test_post_jobs_answers_202_with_location_and_snapshot(server: ServerProcess) -> None:
    response = httpx.post(f"{server.url}/jobs", json={"kind": "demo", "steps": 2, "step_ms": 1})
    assert response.status_code == 202
    snapshot = response.json()
    assert response.headers["location"] == f"/jobs/{snapshot['id']}"
    assert snapshot["state"] == "queued" and snapshot["version"] == 1 and snapshot["progress"] == 0
    assert snapshot["params"] == {"steps": 2, "step_ms": 1}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b'{"kind": "video"}', 422),
        (b'{"kind": "demo", "steps": -4}', 422),
        (b"[]", 422),
    ],
)
def test_bad_job_requests_are_problems(server: ServerProcess, body: bytes, status: int) -> None:
    _problem(httpx.post(f"{server.url}/jobs", content=body), status)


def test_an_oversized_body_is_refused_with_413(server: ServerProcess) -> None:
    _problem(httpx.post(f"{server.url}/jobs", content=b" " * (65 * 1024)), 413)


def test_unknown_paths_and_methods(server: ServerProcess) -> None:
    _problem(httpx.get(f"{server.url}/nowhere"), 404)
    _problem(httpx.get(f"{server.url}/jobs/not-a-job-id"), 404)
    put = httpx.put(f"{server.url}/jobs")
    assert _problem(put, 405)["detail"].endswith("use POST") and put.headers["allow"] == "POST"
    patch = httpx.patch(f"{server.url}/jobs/0123456789abcdef")
    assert _problem(patch, 405) and patch.headers["allow"] == "DELETE, GET, HEAD"


def test_a_problem_instance_is_a_uri_reference(server: ServerProcess) -> None:
    """RFC 9457 §3.1.5: `instance` is a URI reference, so the path (which ASGI hands over decoded)
    is percent-encoded again; it once carried the raw characters (a U+0084, a space)."""
    body = _problem(httpx.get(f"{server.url}/jobs/%C2%84%20x%25"), 404)
    assert body["instance"] == "/jobs/%C2%84%20x%25"


def test_cancel_then_cancel_again_is_a_conflict(server: ServerProcess) -> None:
    job = create_job(server.url, steps=100, step_ms=50)
    canceled = httpx.delete(f"{server.url}/jobs/{job['id']}")
    assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"
    assert _problem(httpx.delete(f"{server.url}/jobs/{job['id']}"), 409)["state"] == "canceled"
    _problem(httpx.delete(f"{server.url}/jobs/0123456789abcdef"), 404)
    assert wait_done(server.url, job["id"])["state"] == "canceled"


@pytest.mark.parametrize("body", [{"user": ""}, {"user": 7}, {"name": "ada"}, ["ada"], {"user": "x" * 257}])
def test_bad_logins_are_unprocessable(server: ServerProcess, body: Any) -> None:
    _problem(httpx.post(f"{server.url}/logins", json=body), 422)


def test_healthz_reports_live_counts(server: ServerProcess) -> None:
    health = httpx.get(f"{server.url}/healthz").json()
    assert health["status"] == "ok"
    assert set(health["feed"]) == {"topics", "waiters", "followers"}

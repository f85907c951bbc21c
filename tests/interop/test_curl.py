"""curl against every HTTP transport: snapshot, long polling, Server-Sent Events, problem details.

curl is the reference HTTP/1.1 client: what it sees is the wire, with no client library of ours in the
way. Each test runs curl as a child process with a deadline and reads its output.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.helpers import create_job, wait_done
from tests.interop.interop_peers import peer_tool
from wirelab.testing import ServerProcess

pytestmark = pytest.mark.interop

STUCK_MS = 60_000  # a step long enough that only we change the job while a test watches it


@dataclass(frozen=True)
class Reply:
    returncode: int
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(frozen=True)
class Event:
    id: str
    event: str
    data: str


def curl(*args: str, timeout: float = 15.0) -> Reply:
    """Run `curl -sS -i ARGS` to its end; the status line and headers come back parsed."""
    command = [peer_tool("curl"), "-sS", "-i", *args]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
    seconds = time.monotonic() - started
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith("HTTP/"), (done.returncode, done.stdout, done.stderr)
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(done.returncode, int(status_line.split()[1]), headers, body, seconds)


def parse_stream(body: bytes) -> tuple[list[Event], list[str]]:
    """The events and the other blocks (retry, comments) of a complete event stream, in order."""
    events, others = [], []
    for block in body.decode().split("\n\n"):
        if not block:
            continue
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        if "data" in fields:
            events.append(Event(fields["id"][0], fields["event"][0], "\n".join(fields["data"])))
        else:
            others.append(block)
    return events, others


@pytest.fixture(scope="module")
def finished_job(server: ServerProcess) -> dict[str, Any]:
    """A job run to its end: queued, running, five steps, done (versions 1 to 8)."""
    job = create_job(server.url, steps=5, step_ms=20)
    return wait_done(server.url, job["id"])


@pytest.fixture
def stuck_job(server: ServerProcess) -> Iterator[dict[str, Any]]:
    """A running job that will not change by itself during the test; canceled afterwards."""
    job = create_job(server.url, steps=1, step_ms=STUCK_MS)
    snapshot: dict[str, Any] = httpx.get(
        f"{server.url}/jobs/{job['id']}", params={"after": 1, "wait": 5}
    ).json()
    assert snapshot["state"] == "running"
    yield snapshot
    httpx.delete(f"{server.url}/jobs/{job['id']}")


def test_create_then_snapshot(server: ServerProcess) -> None:
    """RFC 9110 §15.3.3: POST /jobs answers 202 Accepted with a Location; GET there is the snapshot."""
    spec = json.dumps({"kind": "demo", "steps": 2, "step_ms": 10})
    created = curl("-X", "POST", "-H", "content-type: application/json", "-d", spec, f"{server.url}/jobs")
    assert created.status == 202
    job = created.json()
    assert job["state"] == "queued"
    assert job["version"] == 1
    assert created.headers["location"] == f"/jobs/{job['id']}"

    got = curl(f"{server.url}{created.headers['location']}")
    assert got.status == 200
    assert got.headers["content-type"] == "application/json"
    assert got.headers["cache-control"] == "no-store"
    snapshot = got.json()
    assert snapshot["id"] == job["id"]
    assert snapshot["version"] >= 1
    assert got.headers["x-feed-version"] == str(snapshot["version"])


def test_long_poll_answers_as_soon_as_a_new_version_exists(
    server: ServerProcess, stuck_job: dict[str, Any]
) -> None:
    """Long polling (RFC 6202 §2.1): the held GET returns once a version newer than `after` exists."""
    job_id, version = stuck_job["id"], stuck_job["version"]
    cancel = threading.Timer(0.5, httpx.delete, [f"{server.url}/jobs/{job_id}"])
    cancel.start()
    try:
        reply = curl(f"{server.url}/jobs/{job_id}?after={version}&wait=10")
    finally:
        cancel.join()
    assert reply.status == 200
    snapshot = reply.json()
    assert snapshot["version"] == version + 1
    assert snapshot["state"] == "canceled"
    assert 0.4 < reply.seconds < 3, f"the poll took {reply.seconds:.2f}s for a change at 0.5s"


def test_long_poll_returns_the_unchanged_snapshot_after_wait(
    server: ServerProcess, stuck_job: dict[str, Any]
) -> None:
    """Long polling (RFC 6202 §2.1): with nothing new, the poll ends after `wait` with the same state."""
    version = stuck_job["version"]
    reply = curl(f"{server.url}/jobs/{stuck_job['id']}?after={version}&wait=1")
    assert reply.status == 200
    assert reply.json() == stuck_job
    assert reply.headers["x-feed-version"] == str(version)
    assert 0.9 < reply.seconds < 3, f"wait=1 took {reply.seconds:.2f}s"


def test_event_stream_runs_to_done_and_ends(server: ServerProcess) -> None:
    """WHATWG HTML §9.2.5-§9.2.6: text/event-stream of id/event/data events; it ends after `done`."""
    job = create_job(server.url, steps=5, step_ms=50)
    reply = curl("-N", "--max-time", "10", f"{server.url}/jobs/{job['id']}/events")
    assert reply.returncode == 0, "curl did not see the stream end by itself"
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
    events, others = parse_stream(reply.body)
    assert others[0] == "retry: 2000"
    versions = [int(event.id) for event in events]
    assert versions == list(range(versions[0], versions[0] + len(versions)))
    assert [event.event for event in events[:-1]] == ["progress"] * (len(events) - 1)
    assert events[-1].event == "done"
    for event in events:
        assert json.loads(event.data)["version"] == int(event.id)
    assert versions[-1] == json.loads(events[-1].data)["version"] == 8


def test_event_stream_resumes_after_last_event_id(
    server: ServerProcess, finished_job: dict[str, Any]
) -> None:
    """WHATWG HTML §9.2.4: a request with Last-Event-ID: V gets exactly the events after V."""
    url = f"{server.url}/jobs/{finished_job['id']}/events"
    reply = curl("-N", "--max-time", "10", "-H", "Last-Event-ID: 3", url)
    assert reply.returncode == 0
    events, _ = parse_stream(reply.body)
    assert [int(event.id) for event in events] == list(range(4, finished_job["version"] + 1))
    assert events[-1].event == "done"


def test_event_stream_resumed_after_the_final_event_ends_at_once(
    server: ServerProcess, finished_job: dict[str, Any]
) -> None:
    """WHATWG HTML §9.2.3: EventSource reconnects after `done` with Last-Event-ID = its id; the server
    must end that request at once, and (§9.2.7) 204 No Content tells the client to stop reconnecting.
    """
    url = f"{server.url}/jobs/{finished_job['id']}/events"
    last = str(finished_job["version"])
    reply = curl("-N", "--max-time", "3", "-H", f"Last-Event-ID: {last}", url)
    assert reply.returncode == 0, f"still open after {reply.seconds:.1f}s: {reply.body[:200]!r}"
    assert reply.status == 204, f"{reply.status} with {reply.body!r}: EventSource would reconnect"


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("GET", "/jobs/0000000000000000", None, 404),
        ("GET", "/jobs/{id}?after=abc", None, 400),
        ("GET", "/jobs/{id}?after=1&wait=soon", None, 400),
        ("POST", "/jobs", '{"kind": "teleport"}', 422),
        ("POST", "/jobs", "not json", 400),
        ("GET", "/jobs/0000000000000000/events", None, 404),
    ],
)
def test_problem_details(
    server: ServerProcess,
    finished_job: dict[str, Any],
    method: str,
    path: str,
    body: str | None,
    status: int,
) -> None:
    """RFC 9457 §3: errors are application/problem+json documents with type, title, status, detail."""
    args = ["-X", method, f"{server.url}{path.format(id=finished_job['id'])}"]
    if body is not None:
        args += ["-H", "content-type: application/json", "-d", body]
    reply = curl(*args)
    assert reply.status == status
    assert reply.headers["content-type"] == "application/problem+json"
    problem = reply.json()
    assert problem["status"] == status
    assert problem["type"] == "about:blank"
    assert isinstance(problem["title"], str)
    assert isinstance(problem["detail"], str)
    assert problem["detail"]


def test_head_is_get_without_content(server: ServerProcess, finished_job: dict[str, Any]) -> None:
    """RFC 9110 §9.3.2: HEAD answers with GET's status and headers and no content."""
    url = f"{server.url}/jobs/{finished_job['id']}"
    head = curl("-I", url)
    get = curl(url)
    assert head.status == get.status == 200
    assert head.body == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert head.headers["x-feed-version"] == get.headers["x-feed-version"]


def test_method_not_allowed_says_which_are(server: ServerProcess, finished_job: dict[str, Any]) -> None:
    """RFC 9110 §15.5.6: a 405 MUST carry an Allow header listing the methods the resource supports."""
    reply = curl("-X", "PUT", f"{server.url}/jobs/{finished_job['id']}")
    assert reply.status == 405
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["status"] == 405
    allowed = {method.strip() for method in reply.headers.get("allow", "").split(",")}
    assert allowed == {"DELETE", "GET", "HEAD"}


def test_event_stream_rejects_a_malformed_last_event_id(
    server: ServerProcess, finished_job: dict[str, Any]
) -> None:
    """RFC 9457 §3 and WHATWG HTML §9.2.3: a Last-Event-ID that is no version of ours is a 400."""
    url = f"{server.url}/jobs/{finished_job['id']}/events"
    reply = curl("-N", "--max-time", "5", "-H", "Last-Event-ID: yesterday", url)
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["status"] == 400

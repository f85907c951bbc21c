"""npm `eventsource` (v4, a WHATWG EventSource for Node) against the Server-Sent Events routes.

The Node peer (js/sse_client.mjs) is a plain EventSource: it reconnects by itself and sends back the
last id it saw as Last-Event-ID, exactly as a browser does. It reports every request it makes (with
the Last-Event-ID it carries), every event and every error, as JSON lines.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.helpers import create_job, wait_done
from tests.interop.interop_peers import JsonLinesPeer, Record
from wirelab.testing import ServerProcess

pytestmark = pytest.mark.interop

Start = Callable[..., JsonLinesPeer]
JOB_EVENTS = "progress,done,failed,canceled"


def is_event(name: str) -> Callable[[Record], bool]:
    return lambda record: record["type"] == "event" and record["event"] == name


def versions(records: list[Record]) -> list[int]:
    return [int(r["id"]) for r in records if r["type"] == "event"]


def test_follow_a_job_to_done(node_peer: Start, server: ServerProcess) -> None:
    """WHATWG HTML §9.2.2/§9.2.6: events are dispatched by name with lastEventId = the version."""
    job = create_job(server.url, steps=5, step_ms=60)
    peer = node_peer("sse_client.mjs", f"{server.url}/jobs/{job['id']}/events", JOB_EVENTS)
    records = peer.until(is_event("done"))
    assert records[0] == {"type": "request", "last_event_id": None}
    assert records[1] == {"type": "open"}
    events = [r for r in records if r["type"] == "event"]
    got = versions(events)
    assert got == list(range(got[0], 9)), "consecutive versions, ending with done at version 8"
    assert all(json.loads(e["data"])["version"] == int(e["id"]) for e in events)
    assert [e["event"] for e in events] == ["progress"] * (len(events) - 1) + ["done"]
    peer.send({"op": "close"})


def test_a_published_login_arrives(node_peer: Start, server: ServerProcess) -> None:
    """WHATWG HTML §9.2.6: POST /logins reaches an open /topics/logins/events stream as `login`."""
    peer = node_peer("sse_client.mjs", f"{server.url}/topics/logins/events", "login")
    peer.until(lambda r: r["type"] == "open")
    posted = httpx.post(f"{server.url}/logins", json={"user": "grace"})
    assert posted.status_code == 202
    event = peer.until(lambda r: r["type"] == "event" and json.loads(r["data"])["user"] == "grace")[-1]
    assert event["event"] == "login"
    assert int(event["id"]) == posted.json()["version"]
    peer.send({"op": "close"})


def test_resume_with_last_event_id(node_peer: Start, server: ServerProcess) -> None:
    """WHATWG HTML §9.2.4: a request carrying Last-Event-ID: 3 gets exactly versions 4 to done."""
    job = create_job(server.url, steps=5, step_ms=0)
    final = wait_done(server.url, job["id"])["version"]
    url = f"{server.url}/jobs/{job['id']}/events"
    peer = node_peer("sse_client.mjs", url, JOB_EVENTS, "3")
    records = peer.until(is_event("done"))
    assert records[0] == {"type": "request", "last_event_id": "3"}
    assert versions(records) == list(range(4, final + 1))
    peer.send({"op": "close"})


def test_reconnects_by_itself_across_a_server_restart(node_peer: Start, tmp_path: Path) -> None:
    """WHATWG HTML §9.2.3: when the stream drops, EventSource waits `retry` ms and reconnects with
    Last-Event-ID; the restarted server resumes the job and the client misses and repeats nothing."""
    with ServerProcess(tmp_path, "--heartbeat", "0.5") as first:
        job = create_job(first.url, steps=20, step_ms=150)
        url = f"{first.url}/jobs/{job['id']}/events?after=0"
        peer = node_peer("sse_client.mjs", url, JOB_EVENTS)
        before = peer.until(lambda r: r["type"] == "event" and int(r["id"]) >= 4)
    with ServerProcess(tmp_path, "--heartbeat", "0.5", port=first.port):
        after = peer.until(is_event("done"), timeout=20)
        peer.send({"op": "close"})
    records = before + after
    seen = versions(records)
    assert sum(r["type"] == "request" for r in records) >= 2, "EventSource did not reconnect"
    for index, record in enumerate(records):
        if record["type"] == "request":
            earlier = versions(records[:index])
            assert record["last_event_id"] == (str(earlier[-1]) if earlier else None)
    assert sorted(Counter(seen)) == list(range(1, seen[-1] + 1)), "a version was lost"
    assert max(Counter(seen).values()) == 1, "a version came twice"
    assert seen[-1] == 23  # queued, running, 20 steps, done: the restart cost no version


def test_stops_reconnecting_once_the_job_is_done(node_peer: Start, server: ServerProcess) -> None:
    """WHATWG HTML §9.2.3: the stream ends after `done`, so EventSource reconnects with
    Last-Event-ID = done's id; the server should answer 204 No Content (§9.2.7) so it stops for good."""
    job = create_job(server.url, steps=2, step_ms=0)
    final = wait_done(server.url, job["id"])["version"]
    peer = node_peer("sse_client.mjs", f"{server.url}/jobs/{job['id']}/events", JOB_EVENTS)
    peer.until(is_event("done"))
    records = peer.during(5.0)  # more than two retry intervals (2 s)
    requests = [r for r in records if r["type"] == "request"]
    assert requests, "EventSource did not reconnect after the stream ended"
    assert requests[0]["last_event_id"] == str(final)
    assert len(requests) == 1, f"EventSource reconnected {len(requests)} times in 5 s"
    errors = [r for r in records if r["type"] == "error"]
    assert (errors[-1]["code"], errors[-1]["ready_state"]) == (204, 2)

"""Start, stop and restart `wirelab up` as a user does: signals, open streams, unfinished jobs."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.helpers import create_job
from wirelab.proto.sse import ServerSentEvent, SSEDecoder
from wirelab.testing import ServerProcess


def _sse_versions(url: str, last_event_id: int, result: dict[str, Any]) -> None:
    """Read a stream to its end in a thread; record versions and whether it ended cleanly."""
    decoder, versions = SSEDecoder(), []
    try:
        with httpx.stream("GET", url, headers={"last-event-id": str(last_event_id)}, timeout=30) as r:
            for chunk in r.iter_raw():
                versions += [
                    int(e.id) for e in decoder.receive_data(chunk) if isinstance(e, ServerSentEvent)
                ]
        result["clean"] = True
    except httpx.HTTPError as exc:
        result["error"] = repr(exc)
    result["versions"] = versions


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_gracefully_with_streams_open(tmp_path: Path, sig: int) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        job = create_job(server.url, steps=200, step_ms=50)
        sse: dict[str, Any] = {}
        reader = threading.Thread(
            target=_sse_versions, args=(f"{server.url}/jobs/{job['id']}/events", 0, sse)
        )
        reader.start()
        with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=5) as ws:
            ws.send(json.dumps({"op": "subscribe", "topic": f"jobs/{job['id']}"}))
            ws.recv(timeout=5)
            time.sleep(0.2)
            started = time.monotonic()
            assert server.stop(sig) == 0
            assert time.monotonic() - started < 5
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1012)
        reader.join(10)
        assert sse.get("clean") is True, sse  # the stream was ended, not cut
        assert sse["versions"] == list(range(1, len(sse["versions"]) + 1))
        assert "Traceback" not in server.log()
    finally:
        server.kill()


def test_a_long_poll_in_flight_is_answered_at_shutdown(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    try:
        job = create_job(server.url, steps=1, step_ms=0)
        time.sleep(0.3)
        answer: dict[str, Any] = {}

        def poll() -> None:
            answer["response"] = httpx.get(
                f"{server.url}/jobs/{job['id']}", params={"after": 1000, "wait": 30}, timeout=30
            )

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.3)
        assert server.stop() == 0
        poller.join(10)
        assert answer["response"].status_code == 200
        assert answer["response"].json()["id"] == job["id"]
    finally:
        server.kill()


def test_a_restart_resumes_unfinished_jobs_and_streams_resume_where_they_were(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path, port=None).start()
    try:
        job = create_job(first.url, steps=20, step_ms=50)
        time.sleep(0.4)
        assert first.stop() == 0
    finally:
        first.kill()
    left = _last_snapshot(tmp_path, job["id"])
    assert left["state"] == "running" and 0 < left["progress"] < 1

    second = ServerProcess(tmp_path, port=first.port).start()
    try:
        result: dict[str, Any] = {}
        _sse_versions(f"{second.url}/jobs/{job['id']}/events", left["version"], result)
        assert result.get("clean") is True, result
        assert result["versions"] == list(range(left["version"] + 1, result["versions"][-1] + 1))
        done = httpx.get(f"{second.url}/jobs/{job['id']}").json()
        assert done["state"] == "done" and done["version"] == result["versions"][-1]
    finally:
        second.stop()
        second.kill()


def _last_snapshot(data_dir: Path, job_id: str) -> dict[str, Any]:
    import sqlite3

    with sqlite3.connect(data_dir / "wirelab.db") as db:
        row = db.execute(
            "SELECT data FROM events WHERE topic = ? ORDER BY version DESC LIMIT 1", (f"jobs/{job_id}",)
        ).fetchone()
    snapshot: dict[str, Any] = json.loads(row[0])
    return snapshot

"""Jobs over a feed: states, cancellation, failure and resuming after a restart."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import pytest

from wirelab.app.jobs import Jobs
from wirelab.app.kinds import DemoKind, Kind, Progress
from wirelab.errors import Conflict, NotFound, Unprocessable
from wirelab.feed import Entry, Feed, MemoryEventStore


class Boom:
    name = "boom"
    detached = False

    def parse(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {}

    async def run(
        self, params: Mapping[str, Any], progress: float, report: Progress, *, job_id: str
    ) -> None:
        await report(0.5)
        raise RuntimeError("the work broke")


def _jobs(feed: Feed, workers: int = 2) -> Jobs:
    kinds: dict[str, Kind] = {"demo": DemoKind(), "boom": Boom()}
    return Jobs(feed, kinds, workers=workers)


async def _history(feed: Feed, topic: str) -> list[dict[str, Any]]:
    return [json.loads(e.data_json) for e in await feed.read(topic, 0, limit=1000)]


async def _until_final(feed: Feed, topic: str) -> Entry:
    async def ignore(entry: Entry) -> None:
        pass

    await asyncio.wait_for(feed.follow(topic, 0, ignore), 5)
    latest = await feed.latest(topic)
    assert latest is not None
    return latest


async def test_a_demo_job_goes_queued_running_done_with_its_progress() -> None:
    feed = Feed(MemoryEventStore())
    jobs = _jobs(feed)
    await jobs.start([])
    try:
        entry = await jobs.submit({"kind": "demo", "steps": 4, "step_ms": 1})
        final = await _until_final(feed, entry.topic)
    finally:
        await jobs.stop()
    history = await _history(feed, entry.topic)
    assert [(h["state"], h["progress"]) for h in history] == [
        ("queued", 0.0),
        ("running", 0.0),
        ("running", 0.25),
        ("running", 0.5),
        ("running", 0.75),
        ("running", 1.0),
        ("done", 1.0),
    ]
    assert [h["version"] for h in history] == list(range(1, 8))
    assert final.event == "done" and final.final


async def test_cancel_ends_a_running_job_and_refuses_an_ended_one() -> None:
    feed = Feed(MemoryEventStore())
    jobs = _jobs(feed)
    await jobs.start([])
    try:
        entry = await jobs.submit({"kind": "demo", "steps": 100, "step_ms": 20})
        await asyncio.sleep(0.05)
        canceled = await jobs.cancel(entry.topic.removeprefix("jobs/"))
        assert canceled.event == "canceled" and canceled.final
        await asyncio.sleep(0.05)
        assert (await feed.latest(entry.topic)) == canceled  # nothing published after it
        with pytest.raises(Conflict):
            await jobs.cancel(entry.topic.removeprefix("jobs/"))
        with pytest.raises(NotFound):
            await jobs.cancel("0123456789abcdef")
    finally:
        await jobs.stop()
    assert jobs.statistics() == {"active": 0, "queued": 0}


async def test_a_failing_job_ends_failed_with_the_reason() -> None:
    feed = Feed(MemoryEventStore())
    jobs = _jobs(feed)
    await jobs.start([])
    try:
        entry = await jobs.submit({"kind": "boom"})
        final = await _until_final(feed, entry.topic)
    finally:
        await jobs.stop()
    snapshot = json.loads(final.data_json)
    assert final.event == "failed"
    assert snapshot["state"] == "failed" and "the work broke" in snapshot["error"]


@pytest.mark.parametrize(
    "spec",
    [
        [],
        {"kind": "video"},
        {"kind": ["demo"]},
        {"kind": {"name": "demo"}},
        {"steps": 3},
        {"kind": "demo", "steps": 0},
        {"kind": "demo", "steps": "3"},
        {"kind": "demo", "step_ms": -1},
        {"kind": "demo", "color": "red"},
    ],
)
async def test_bad_specs_are_unprocessable(spec: Any) -> None:
    jobs = _jobs(Feed(MemoryEventStore()))
    with pytest.raises(Unprocessable):
        await jobs.submit(spec)


async def test_stopping_leaves_running_jobs_open_and_starting_resumes_them() -> None:
    store = MemoryEventStore()
    feed = Feed(store)
    jobs = _jobs(feed)
    await jobs.start([])
    entry = await jobs.submit({"kind": "demo", "steps": 10, "step_ms": 10})
    await asyncio.sleep(0.06)
    await jobs.stop()
    left = await feed.latest(entry.topic)
    assert left is not None and not left.final
    progress_at_stop = json.loads(left.data_json)["progress"]
    assert 0 < progress_at_stop < 1

    feed2 = Feed(store)
    jobs2 = _jobs(feed2)
    await jobs2.start([left])
    try:
        await _until_final(feed2, entry.topic)
    finally:
        await jobs2.stop()
    history = await _history(feed2, entry.topic)
    progresses = [h["progress"] for h in history if h["state"] == "running"]
    # resumed where it stopped: every step reported once, none restarted from zero
    assert progresses == [round(step / 10, 6) for step in range(11)]
    assert history[-1]["state"] == "done"

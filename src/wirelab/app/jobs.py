"""Jobs: long work done in the background, each one a feed topic `jobs/{id}`.

Theory of operation: a job's whole public state is its snapshot, and every change of state is
published to the job's topic as a new snapshot, so the feed (and the store behind it) is the only
record. `submit` publishes the queued snapshot; a fixed pool of worker tasks runs queued jobs; the
terminal event (done, failed, canceled) closes the topic. Stopping the service cancels the workers
and leaves running jobs as they were in the store; starting it again re-queues every job whose topic
is still open, and each kind resumes from the progress it last reported.

Detached jobs (the image pipeline, demo jobs dispatched to `wirelab worker`) keep no state in this
process once started: their news (`apply`) and their cancellation are applied to the latest snapshot
in the store, whichever instance of the API created them, so any instance may take them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from wirelab.app.kinds import Kind
from wirelab.errors import Conflict, NotFound, Unprocessable
from wirelab.feed import Change, Completes, Entry, Feed, TopicClosed
from wirelab.proto.pipeline import JobProgress

__all__ = ["TERMINAL_STATES", "Jobs"]

log = logging.getLogger("wirelab.jobs")

TERMINAL_STATES = ("done", "failed", "canceled")


@dataclass
class _Job:
    id: str
    kind: str
    params: dict[str, Any]
    created_at: str
    state: str = "queued"
    progress: float = 0.0
    error: str | None = None
    outputs: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def topic(self) -> str:
        return f"jobs/{self.id}"

    def snapshot(self, version: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": round(self.progress, 6),
            "version": version,
            "created_at": self.created_at,
            "updated_at": _now(),
            "params": self.params,
            "error": self.error,
            "outputs": self.outputs,
        }

    @classmethod
    def from_snapshot(cls, snapshot: Mapping[str, Any]) -> _Job:
        return cls(
            id=snapshot["id"],
            kind=snapshot["kind"],
            params=snapshot["params"],
            created_at=snapshot["created_at"],
            state=snapshot["state"],
            progress=snapshot["progress"],
            outputs=snapshot.get("outputs", []),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Jobs:
    def __init__(self, feed: Feed, kinds: Mapping[str, Kind], *, workers: int) -> None:
        self._feed = feed
        self._kinds = kinds
        self._worker_count = workers
        self._active: dict[str, _Job] = {}
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []

    async def start(self, unfinished: list[Entry]) -> None:
        """Re-queue the jobs a previous run left open, then start the workers."""
        for entry in unfinished:
            job = _Job.from_snapshot(_load(entry.data_json))
            self._active[job.id] = job
            self._queue.put_nowait(job)
        if unfinished:
            log.info("resuming %d unfinished job(s)", len(unfinished))
        self._workers = [asyncio.create_task(self._work()) for _ in range(self._worker_count)]

    async def stop(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    async def submit(self, spec: Any, *, completes: Completes | None = None) -> Entry:
        """Queue a job; `completes` makes its creation the answer of an idempotent request, stored
        in the same transaction as the job's first snapshot."""
        if not isinstance(spec, dict):
            raise Unprocessable('a job is a JSON object such as {"kind": "demo"}')
        name = spec.get("kind")
        kind = self._kinds.get(name) if isinstance(name, str) else None
        if kind is None:
            known = ", ".join(sorted(self._kinds))
            raise Unprocessable(f"kind must be one of: {known}; got {spec.get('kind')!r}")
        job = _Job(secrets.token_hex(8), kind.name, kind.parse(spec), _now())
        entry = await self._feed.publish(job.topic, "progress", job.snapshot, completes=completes)
        self._active[job.id] = job
        self._queue.put_nowait(job)
        log.info("job %s queued (%s %s)", job.id, job.kind, job.params)
        return entry

    async def cancel(self, job_id: str) -> Entry:
        job = self._active.get(job_id)
        if job is not None and not self._kinds[job.kind].detached:
            if job.task is not None:
                job.task.cancel()
            return await self._finish(job, "canceled")
        self._active.pop(job_id, None)

        def cancel(latest: Entry | None) -> Change:
            if latest is None:
                raise NotFound(f"no job {job_id}")
            snapshot = _Job.from_snapshot(_load(latest.data_json))
            if snapshot.state in TERMINAL_STATES:
                raise Conflict(f"job {job_id} has already ended", state=snapshot.state)
            snapshot.state = "canceled"
            return "canceled", snapshot.snapshot, True

        try:
            entry = await self._feed.update(f"jobs/{job_id}", cancel)
        except TopicClosed:
            latest = await self._feed.latest(f"jobs/{job_id}")
            state = _load(latest.data_json)["state"] if latest else "ended"
            raise Conflict(f"job {job_id} has already ended", state=state) from None
        assert entry is not None
        log.info("job %s canceled", job_id)
        return entry

    async def apply(self, update: JobProgress) -> None:
        """News of detached work, applied to the job's latest snapshot in the store; late or
        repeated news, and news of a job that ended, is ignored."""

        def advance(latest: Entry | None) -> Change | None:
            job = _Job.from_snapshot(_load(latest.data_json)) if latest else None
            if job is None or job.state != "running" or update.progress < job.progress:
                return None
            job.progress, job.outputs = update.progress, update.outputs
            if update.state == "done":
                job.state = "done"
                return "done", job.snapshot, True
            return "progress", job.snapshot, False

        try:
            entry = await self._feed.update(f"jobs/{update.job}", advance)
        except TopicClosed:
            return
        if entry is not None and entry.final:
            self._active.pop(update.job, None)
            log.info("job %s done", update.job)

    def statistics(self) -> dict[str, int]:
        return {"active": len(self._active), "queued": self._queue.qsize()}

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            if job.state == "canceled":
                continue
            job.task = asyncio.create_task(self._run(job))
            try:
                await asyncio.wait({job.task})
            except asyncio.CancelledError:
                job.task.cancel()
                await asyncio.wait({job.task})
                raise

    async def _run(self, job: _Job) -> None:
        async def report(progress: float) -> None:
            job.progress = progress
            await self._publish(job, "progress")

        try:
            if job.state != "running":
                job.state = "running"
                await self._publish(job, "progress")
            kind = self._kinds[job.kind]
            await kind.run(job.params, job.progress, report, job_id=job.id)
            if kind.detached:
                self._active.pop(job.id, None)  # its news comes through `apply`, to any instance
            else:
                await self._finish(job, "done")
        except asyncio.CancelledError:
            raise  # canceled by a client (already published) or by shutdown (resumed later)
        except Exception as exc:
            log.exception("job %s failed", job.id)
            job.error = f"{type(exc).__name__}: {exc}"
            await self._finish(job, "failed")

    async def _finish(self, job: _Job, state: str) -> Entry:
        """End the job in `state` (done, failed, canceled): its final event closes the topic."""
        job.state = state
        self._active.pop(job.id, None)
        log.info("job %s %s", job.id, state)
        return await self._publish(job, state)

    async def _publish(self, job: _Job, event: str) -> Entry:
        return await self._feed.publish(job.topic, event, job.snapshot, final=event in TERMINAL_STATES)


def _load(data_json: str) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(data_json)
    return value

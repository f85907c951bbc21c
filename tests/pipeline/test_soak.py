"""A thousand image jobs while a format worker keeps dying: on RabbitMQ with worker processes killed
with SIGKILL and restarted, and on the embedded broker with a consumer task cancelled and replaced.

At-least-once delivery means every job ends `done` and every output is on disk exactly once, however
often a worker dies with messages in hand. Tiny images keep the work itself negligible, so what is
measured is the messaging. Kills come at random moments from a seeded generator; the seed is in the
failure message. Without RabbitMQ the first test skips, and fails under CI=true.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.pipeline.lab import AMQP_URL, JOB_FILES, Lab, jpeg
from wirelab.app.imaging import output_info
from wirelab.app.pipeline import SERVICES, Stages, declare_pipeline, serve
from wirelab.proto.pipeline import PROGRESS, TARGETS, UPLOADED, JobProgress, StageMessage, decode_progress
from wirelab.pubsub import MemoryBroker, Message
from wirelab.upload import ImageStore

JOBS = 1000
IMAGES = 8
KILLS = 5
SEED = random.randrange(1 << 32)


def tiny_images() -> list[bytes]:
    return [jpeg(48 + i, 32 + i) for i in range(IMAGES)]


def outputs_on_disk(outputs: Path, job_ids: list[str]) -> dict[str, list[str]]:
    """The jobs whose outputs/JOB/ holds anything but each expected file once, with what it holds."""
    wrong = {}
    for job_id in job_ids:
        job_dir = outputs / job_id
        files = sorted(p.name for p in job_dir.iterdir()) if job_dir.exists() else []
        if files != JOB_FILES:
            wrong[job_id] = files
    return wrong


def as_described(outputs: Path, job_id: str, described: list[dict[str, Any]]) -> bool:
    """The files on disk are the very bytes that a job's outputs describe."""
    on_disk = {name: output_info(outputs / job_id / f"{name}.jpg") for name in TARGETS}
    return {o["name"]: (o["bytes"], o["sha256"]) for o in described} == {
        name: (info.bytes, info.sha256) for name, info in on_disk.items()
    }


class Killer(threading.Thread):
    """Kills one format worker with SIGKILL at random moments, starting a new one each time, until
    it has done so KILLS times or the block it guards ends."""

    def __init__(self, lab: Lab, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.lab = lab
        self.rng = rng
        self.victim = lab.worker("format")
        self.kills: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        while len(self.kills) < KILLS and not self.stopped.wait(self.rng.uniform(0.5, 2.0)):
            self.victim.kill()
            self.victim.wait()
            self.kills.append(round(time.monotonic() - started, 2))
            self.victim = self.lab.worker("format")

    def __enter__(self) -> Killer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        self.join()

    def __str__(self) -> str:
        return f"seed {SEED}, format worker killed at {self.kills} s"


@pytest.fixture
def amqp_lab(tmp_path: Path) -> Iterator[Lab]:
    with Lab(AMQP_URL, tmp_path) as lab:
        yield lab


def test_a_thousand_jobs_on_rabbitmq_with_a_format_worker_killed_again_and_again(
    amqp_lab: Lab,
) -> None:
    lab, rng = amqp_lab, random.Random(SEED)
    lab.worker("compress", "notify", consumers=4)
    lab.worker("format", consumers=2)
    lab.worker("format", consumers=2)
    images = [lab.upload(body) for body in tiny_images()]
    with Killer(lab, rng) as killer:
        job_ids = [lab.submit(images[i % IMAGES]) for i in range(JOBS)]
        deadline = time.monotonic() + 75
        pending = set(job_ids)
        while pending:
            assert time.monotonic() < deadline, f"{len(pending)} jobs still running ({killer}){lab}"
            pending = {j for j in pending if lab.snapshot(j)["state"] not in ("done", "failed", "canceled")}
            time.sleep(0.2)
    context = str(killer)
    assert len(killer.kills) >= 3, f"the jobs were done before the killer had its turn ({context})"

    snapshots = [lab.snapshot(job_id) for job_id in job_ids]
    assert Counter(s["state"] for s in snapshots) == {"done": JOBS}, context
    assert outputs_on_disk(lab.data_dir / "outputs", job_ids) == {}, context
    for snapshot in snapshots:
        assert as_described(lab.data_dir / "outputs", snapshot["id"], snapshot["outputs"]), snapshot
    for job_id in rng.sample(job_ids, 50):
        events = lab.http.get(f"/jobs/{job_id}/events", headers={"last-event-id": "0"}).text
        names = [line for line in events.splitlines() if line.startswith("event: ")]
        assert names[-1] == "event: done" and names.count("event: done") == 1, (job_id, names)
    assert lab.dead_letters() == "", context


async def _consume(broker: MemoryBroker, done: dict[str, list[JobProgress]]) -> None:
    async def record(message: Message) -> None:
        update = decode_progress(message.body)
        if update.state == "done":
            done[update.job].append(update)

    await serve(broker, "feed", (PROGRESS,), record)


async def _store_images(images: ImageStore) -> list[str]:
    async def chunks(body: bytes) -> AsyncIterator[bytes]:
        yield body

    return [(await images.save(chunks(body))).id for body in tiny_images()]


async def test_a_thousand_jobs_on_the_embedded_broker_with_a_format_consumer_cancelled(
    tmp_path: Path,
) -> None:
    """In one process: cancelling a consumer task is how an embedded worker dies, and what it held
    goes back to the queue (memory.py)."""
    rng = random.Random(SEED)
    broker = MemoryBroker()
    await declare_pipeline(broker)
    await broker.declare("feed", (PROGRESS,))
    stages = Stages(broker, tmp_path).handlers()
    done: dict[str, list[JobProgress]] = defaultdict(list)
    redelivered = 0

    async def format_and_count(message: Message) -> None:
        nonlocal redelivered
        redelivered += message.attempts > 1
        await stages["format"](message)

    handlers = {**stages, "format": format_and_count}

    def consumer(service: str) -> asyncio.Task[None]:
        return asyncio.create_task(serve(broker, service, SERVICES[service], handlers[service]))

    tasks = [asyncio.create_task(_consume(broker, done))]
    tasks += [consumer(s) for s in ("compress", "compress", "notify", "notify", "format", "format")]
    victim = consumer("format")
    try:
        images = await _store_images(ImageStore(tmp_path / "images"))
        job_ids = [f"{i:016x}" for i in range(1, JOBS + 1)]
        for i, job_id in enumerate(job_ids):
            message = StageMessage(job_id, images[i % IMAGES], tuple(TARGETS))
            await broker.publish(UPLOADED, message.encode())
        kills = 0
        async with asyncio.timeout(60):
            while len(done) < JOBS:
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                if kills < KILLS:
                    victim.cancel()
                    await asyncio.gather(victim, return_exceptions=True)
                    victim, kills = consumer("format"), kills + 1
        assert kills == KILLS, f"the run ended before the killer had its turn (seed {SEED})"
        assert redelivered, f"no cancelled consumer held a message (seed {SEED})"
    finally:
        for task in [*tasks, victim]:
            task.cancel()
        await asyncio.gather(*tasks, victim, return_exceptions=True)

    context = f"seed {SEED}"
    assert sorted(done) == job_ids, context
    assert outputs_on_disk(tmp_path / "outputs", job_ids) == {}, context
    for job_id, updates in done.items():  # the first one ends the job for its followers
        assert as_described(tmp_path / "outputs", job_id, updates[0].outputs), f"{job_id}: {context}"
    for service in [*SERVICES, "feed"]:
        assert await broker.dead_letters(service) == [], context

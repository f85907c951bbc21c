"""At-least-once delivery end to end: `wirelab up --no-pipeline` with the stages in separate
`wirelab worker` processes, on RabbitMQ and on Redis, and a format worker killed with SIGKILL in
the middle of a message.

What a kill must not break (see app/pipeline.py and imaging.py): the broker hands whatever the dead
worker held to another worker, the job still ends `done`, and each output is on disk exactly once,
whole, with no temporary file left beside it. Every test gets its own broker namespace, removed
afterwards. Without RabbitMQ or Redis the tests skip with the reason, and fail under CI=true.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline.lab import (
    AMQP_URL,
    BROKERS,
    JOB_FILES,
    REDELIVERY_S,
    TARGET_FILES,
    Lab,
    assert_outputs_once,
    jpeg,
)


@pytest.fixture(params=list(BROKERS))
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    with Lab(BROKERS[request.param], tmp_path) as lab:
        yield lab


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """6000x4000 of noise: each resize takes Pillow about half a second, long enough to be caught."""
    return jpeg(6000, 4000, noise=True)


def warm_up(lab: Lab) -> None:
    """One small job to `done`, so every worker started so far is consuming."""
    lab.wait_done(lab.submit(lab.upload(jpeg(64, 48))), timeout=30)


def writing(job_dir: Path) -> bool:
    """A file of a target has appeared: the first output is being written (or just was)."""
    names = [p.name for p in job_dir.iterdir()] if job_dir.exists() else []
    return any(not name.lstrip(".").startswith("compressed.jpg") for name in names)


def test_separate_worker_processes_finish_an_image_job(lab: Lab) -> None:
    for service in ("compress", "format", "notify"):
        lab.worker(service)
    job_id = lab.submit(lab.upload(jpeg(3000, 2000)))
    done = lab.wait_done(job_id, timeout=30)
    assert done["progress"] == 1.0
    assert_outputs_once(lab, job_id, done)
    assert {o["name"]: (o["width"], o["height"]) for o in done["outputs"]} == {
        "480p": (720, 480),
        "1080p": (1620, 1080),
        "4k": (3000, 2000),  # never upscaled
    }
    assert lab.dead_letters() == ""


def test_a_format_worker_killed_mid_message_is_replaced(lab: Lab, big_jpeg: bytes) -> None:
    """The only format worker takes every resize of the job (prefetch 4 >= 3 targets) and is
    killed with SIGKILL as soon as the job shows its compress stage done, while it resizes the
    first target; a second format worker, already running, gets them all back."""
    lab.worker("compress")
    lab.worker("notify")
    victim = lab.worker("format")
    warm_up(lab)
    image_id = lab.upload(big_jpeg)
    job_id = lab.submit(image_id)
    deadline = time.monotonic() + 30
    while lab.snapshot(job_id)["progress"] == 0:  # notify saw compress's first message
        assert time.monotonic() < deadline, f"compress did not finish{lab}"
        time.sleep(0.01)
    heir = lab.worker("format")
    victim.kill()
    at_kill = lab.job_files(job_id)
    assert victim.wait(10) == -signal.SIGKILL
    assert not set(TARGET_FILES) <= set(at_kill), f"the victim was idle when killed: {at_kill}"

    done = lab.wait_done(job_id, timeout=REDELIVERY_S[lab.broker_url.partition(":")[0]])
    assert heir.poll() is None, f"the heir died{lab}"
    assert_outputs_once(lab, job_id, done)
    assert lab.dead_letters() == ""


def test_a_format_worker_killed_while_writing_leaves_no_partial_file(
    tmp_path: Path, big_jpeg: bytes
) -> None:
    """The harshest moment: SIGKILL while the worker writes an output's temporary file. The
    redelivered message rewrites that output, and nothing of the dead writer may stay behind
    (the broker does not matter here, so this runs on RabbitMQ, which redelivers at once)."""
    with Lab(AMQP_URL, tmp_path) as lab:
        lab.worker("compress", "notify")
        victim = lab.worker("format")
        warm_up(lab)
        job_id = lab.submit(lab.upload(big_jpeg))
        job_dir = lab.data_dir / "outputs" / job_id
        deadline = time.monotonic() + 30
        while not writing(job_dir):
            assert time.monotonic() < deadline, f"no output was written{lab}"
            time.sleep(0.001)
        victim.kill()
        at_kill = lab.job_files(job_id)
        assert victim.wait(10) == -signal.SIGKILL
        lab.worker("format")
        done = lab.wait_done(job_id, timeout=30)
        assert lab.job_files(job_id) == JOB_FILES, f"killed while writing {at_kill}"
        assert_outputs_once(lab, job_id, done)

"""At-least-once delivery end to end: `wirelab up --no-pipeline` with the stages in separate
`wirelab worker` processes, on RabbitMQ and on Redis, and a format worker killed with SIGKILL in
the middle of a message.

What a kill must not break (see app/pipeline.py and imaging.py): the broker hands whatever the dead
worker held to another worker, the job still ends `done`, and each output is on disk exactly once,
whole, with no temporary file left beside it. Every test gets its own broker namespace, removed
afterwards. Without RabbitMQ or Redis the tests skip with the reason, and fail under CI=true.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from wirelab.pubsub.factory import remove_namespace
from wirelab.testing import ServerProcess

AMQP_URL = os.environ.get("WIRELAB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("WIRELAB_TEST_REDIS", "redis://127.0.0.1:6379/0")
BROKERS = {"amqp": AMQP_URL, "redis": REDIS_URL}
TARGET_FILES = ["1080p.jpg", "480p.jpg", "4k.jpg"]
JOB_FILES = sorted(["compressed.jpg", *TARGET_FILES])
"""Everything a finished job leaves in outputs/JOB/: nothing more, nothing twice."""
REDELIVERY_S = {"amqp": 30.0, "redis": 75.0}
"""How long a dead worker's messages may take to come back: RabbitMQ requeues them as soon as the
connection drops; Redis leaves them pending until another consumer claims them after the broker's
visibility timeout (30 s, and claims are looked for every 15 s)."""


def jpeg(width: int, height: int, *, noise: bool = False) -> bytes:
    """A real JPEG; with `noise`, one that takes Pillow a while to decode and resize."""
    if noise:
        image = Image.effect_noise((width, height), 64).convert("RGB")
    else:
        image = Image.new("RGB", (width, height), (30, 160, 90))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def require_broker(url: str) -> None:
    """Skip (locally) or fail (CI=true) unless a broker at `url` answers. Connecting may declare
    things (RabbitMQ: the namespace's exchanges), so the probe's namespace is removed again."""
    try:
        asyncio.run(remove_namespace(url, f"wltest-{secrets.token_hex(4)}"))
    except Exception as exc:  # an engine that is not running, or an adapter that is missing
        message = f"broker at {url.rpartition('@')[2]} unavailable: {exc!r}"  # no password
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


class Lab:
    """`wirelab up --no-pipeline` and `wirelab worker` processes sharing one broker namespace and
    one data directory, talked to only over HTTP, the broker and the files they write."""

    def __init__(self, broker_url: str, data_dir: Path) -> None:
        self.broker_url = broker_url
        self.namespace = f"wltest-{secrets.token_hex(4)}"
        self.data_dir = data_dir
        self.server = ServerProcess(
            data_dir, "--broker", broker_url, "--namespace", self.namespace, "--no-pipeline"
        )
        self.http = httpx.Client(base_url=self.server.url, timeout=30)
        self.workers: list[subprocess.Popen[bytes]] = []

    def start(self) -> Lab:
        self.server.start()
        return self

    def worker(self, *services: str, consumers: int = 1) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "wirelab", "worker", *services]
        options = ["--broker", self.broker_url, "--namespace", self.namespace]
        options += ["--data-dir", str(self.data_dir), "--consumers", str(consumers)]
        log_path = self.data_dir / f"worker-{len(self.workers)}-{'-'.join(services)}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([*command, *options], stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(process)
        return process

    def upload(self, body: bytes) -> str:
        response = self.http.post("/images", content=body, headers={"content-type": "image/jpeg"})
        assert response.status_code == 201, response.text
        image_id: str = response.json()["id"]
        return image_id

    def submit(self, image_id: str, **spec: Any) -> str:
        response = self.http.post("/jobs", json={"kind": "image", "image": image_id, **spec})
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def snapshot(self, job_id: str) -> dict[str, Any]:
        snapshot: dict[str, Any] = self.http.get(f"/jobs/{job_id}").json()
        return snapshot

    def wait_done(self, job_id: str, *, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (snapshot := self.snapshot(job_id))["state"] not in ("done", "failed", "canceled"):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {snapshot['state']} after {timeout}s{self}")
            time.sleep(0.05)
        assert snapshot["state"] == "done", f"{snapshot}{self}"
        return snapshot

    def job_files(self, job_id: str) -> list[str]:
        """Every file in outputs/JOB/, hidden ones (temporary files) included."""
        return sorted(path.name for path in (self.data_dir / "outputs" / job_id).iterdir())

    def dead_letters(self) -> str:
        """What `wirelab dlq list` prints for every service: nothing, when nothing failed."""
        command = [sys.executable, "-m", "wirelab", "dlq", "list", "--broker", self.broker_url]
        listed = subprocess.run(
            [*command, "--namespace", self.namespace], capture_output=True, text=True, timeout=30
        )
        assert listed.returncode == 0, listed.stderr
        return listed.stdout

    def close(self) -> None:
        """Workers get Ctrl-C (a killed one is already gone), the server SIGTERM; then the
        namespace is removed from the broker."""
        self.http.close()
        for process in self.workers:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.workers:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        try:
            self.server.stop()
        finally:
            self.server.kill()
            asyncio.run(remove_namespace(self.broker_url, self.namespace))

    def __str__(self) -> str:
        logs = [f"\n--- server\n{self.server.log()}"]
        for path in sorted(self.data_dir.glob("worker-*.log")):
            logs.append(f"\n--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "".join(logs)


def assert_outputs_once(lab: Lab, job_id: str, done: dict[str, Any]) -> None:
    """Each output once on disk, whole, and the very bytes the job's snapshot describes."""
    assert lab.job_files(job_id) == JOB_FILES
    outputs = {output["name"]: output for output in done["outputs"]}
    assert sorted(f"{name}.jpg" for name in outputs) == TARGET_FILES
    for name, output in outputs.items():
        data = (lab.data_dir / "outputs" / job_id / f"{name}.jpg").read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (output["bytes"], output["sha256"])
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # a truncated file fails here
            assert image.size == (output["width"], output["height"])


@pytest.fixture(params=list(BROKERS))
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    require_broker(BROKERS[request.param])
    lab = Lab(BROKERS[request.param], tmp_path).start()
    try:
        yield lab
    finally:
        lab.close()


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
    require_broker(AMQP_URL)
    lab = Lab(AMQP_URL, tmp_path).start()
    try:
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
    finally:
        lab.close()

"""A lab of real processes for pipeline tests: `wirelab up --no-pipeline`, `wirelab worker`s, one
broker namespace and one data directory, with the checks several test files share."""

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
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from tests.helpers import unavailable
from wirelab.pubsub.factory import remove_namespace
from wirelab.testing import ServerProcess

AMQP_URL = os.environ.get("WIRELAB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("WIRELAB_TEST_REDIS", "redis://127.0.0.1:6379/0")
BROKERS = {"amqp": AMQP_URL, "redis": f"{REDIS_URL}?visibility_timeout=4"}
TARGET_FILES = ["1080p.jpg", "480p.jpg", "4k.jpg"]
JOB_FILES = sorted(["compressed.jpg", *TARGET_FILES])
"""Everything a finished job leaves in outputs/JOB/: nothing more, nothing twice."""
REDELIVERY_S = {"amqp": 30.0, "redis": 30.0}
"""How long a dead worker's messages may take to come back: RabbitMQ requeues them as soon as the
connection drops; Redis leaves them pending until another consumer claims them after the broker's
visibility timeout (4 s in these tests, from the URL; claims are looked for every 2 s)."""


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
        unavailable(message)


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

    def __enter__(self) -> Lab:
        """Skip or fail (see require_broker) unless the broker answers, then start the server."""
        try:
            require_broker(self.broker_url)
        except BaseException:  # skipped or failed: nothing was started but the HTTP client
            self.http.close()
            raise
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

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
        response = self.http.post(
            "/images", params={"targets": ""}, content=body, headers={"content-type": "image/jpeg"}
        )
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

"""The image pipeline end to end, over HTTP and the embedded broker, on real image bytes."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import wait_done
from wirelab.app.pipeline import Stages, declare_pipeline, serve
from wirelab.proto.pipeline import UPLOADED
from wirelab.pubsub import MemoryBroker
from wirelab.testing import ServerProcess


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (30, 160, 90)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipeline_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("pipeline")) as server:
        yield server


def _image_job(server: ServerProcess, body: bytes, **spec: Any) -> dict[str, Any]:
    image = httpx.post(f"{server.url}/images", params={"targets": ""}, content=body).json()
    response = httpx.post(f"{server.url}/jobs", json={"kind": "image", "image": image["id"], **spec})
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    return job


def test_an_image_job_ends_done_with_every_output_served(pipeline_server: ServerProcess) -> None:
    job = _image_job(pipeline_server, _jpeg(3000, 2000))
    done = wait_done(pipeline_server.url, job["id"], timeout=30)
    assert done["state"] == "done" and done["progress"] == 1.0
    outputs = {o["name"]: o for o in done["outputs"]}
    assert set(outputs) == {"480p", "1080p", "4k"}
    assert (outputs["480p"]["width"], outputs["480p"]["height"]) == (720, 480)
    assert (outputs["1080p"]["width"], outputs["1080p"]["height"]) == (1620, 1080)
    assert (outputs["4k"]["width"], outputs["4k"]["height"]) == (2000 * 3 // 2, 2000)  # never upscaled
    for name, output in outputs.items():
        served = httpx.get(f"{pipeline_server.url}{output['url']}")
        assert served.status_code == 200 and served.headers["content-type"] == "image/jpeg"
        assert hashlib.sha256(served.content).hexdigest() == output["sha256"]
        assert len(served.content) == output["bytes"]
        with Image.open(io.BytesIO(served.content)) as image:
            assert image.size == (output["width"], output["height"]), name


def test_the_stages_show_as_progress_on_the_jobs_feed(pipeline_server: ServerProcess) -> None:
    job = _image_job(pipeline_server, _jpeg(800, 600), targets=["480p"])
    done = wait_done(pipeline_server.url, job["id"], timeout=30)
    events = httpx.get(f"{pipeline_server.url}/jobs/{job['id']}/events", headers={"last-event-id": "0"})
    states = [line for line in events.text.splitlines() if line.startswith("event: ")]
    assert states[-1] == "event: done" and len(states) >= 3
    assert [o["name"] for o in done["outputs"]] == ["480p"]


@pytest.mark.parametrize(
    "spec",
    [
        {"image": "0" * 32},
        {"image": "../../etc/passwd"},
        {"image": None},
        {"targets": ["8k"]},
        {"targets": []},
        {"targets": [["480p"]]},
        {"targets": ["480p", {}]},
        {"color": "red"},
    ],
)
def test_bad_image_jobs_are_unprocessable(pipeline_server: ServerProcess, spec: dict[str, Any]) -> None:
    image = httpx.post(
        f"{pipeline_server.url}/images", params={"targets": ""}, content=_jpeg(10, 10)
    ).json()
    response = httpx.post(
        f"{pipeline_server.url}/jobs", json={"kind": "image", "image": image["id"], **spec}
    )
    assert response.status_code == 422 and response.headers["content-type"] == "application/problem+json"


def test_outputs_of_unknown_jobs_or_names_are_404(pipeline_server: ServerProcess) -> None:
    job = _image_job(pipeline_server, _jpeg(100, 100), targets=["480p"])
    wait_done(pipeline_server.url, job["id"], timeout=30)
    for path in (
        f"/jobs/{job['id']}/outputs/1080p",
        f"/jobs/{job['id']}/outputs/compressed",
        "/jobs/0123456789abcdef/outputs/480p",
    ):
        assert httpx.get(f"{pipeline_server.url}{path}").status_code == 404


async def test_malformed_messages_are_dead_lettered_and_the_worker_goes_on(tmp_path: Path) -> None:
    """A stage never crashes on a bad message: it goes to the dead-letter queue at once."""
    broker = MemoryBroker()
    await declare_pipeline(broker)
    handlers = Stages(broker, tmp_path).handlers()
    worker = asyncio.create_task(
        serve(broker, "compress", (UPLOADED,), handlers["compress"], max_attempts=3)
    )
    try:
        await broker.publish(UPLOADED, b'{"v": 9, "what": "is this"}')
        await broker.publish(UPLOADED, b"\x00 not json")
        for _ in range(500):
            if len(await broker.dead_letters("compress")) == 2:
                break
            await asyncio.sleep(0.01)
        letters = await broker.dead_letters("compress")
        assert [letter.message.attempts for letter in letters] == [1, 1]  # no attempt wasted
        assert "schema version" in letters[0].reason and "not JSON" in letters[1].reason
        assert not worker.done()
    finally:
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)


def test_an_image_job_stopped_half_way_finishes_after_a_restart(tmp_path: Path) -> None:
    """The embedded broker's messages die with the process, but the job is in the store: at the
    next start it runs again from the upload, and the outputs are rewritten, not duplicated."""
    first = ServerProcess(tmp_path).start()
    try:
        job = _image_job(first, _noise_jpeg(5000, 3500))
        deadline = time.monotonic() + 20
        while httpx.get(f"{first.url}/jobs/{job['id']}").json()["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert first.stop() == 0
    finally:
        first.kill()
    left = sqlite_state(tmp_path, job["id"])
    assert left == "running", "the job ended before the server stopped; make the image bigger"
    with ServerProcess(tmp_path, port=first.port) as second:
        done = wait_done(second.url, job["id"], timeout=60)
    assert done["state"] == "done" and len(done["outputs"]) == 3
    files = sorted(p.name for p in (tmp_path / "outputs" / job["id"]).iterdir())
    assert files == ["1080p.jpg", "480p.jpg", "4k.jpg", "compressed.jpg"]


def _noise_jpeg(width: int, height: int) -> bytes:
    """Noise compresses badly, so the stages take a while: long enough to stop the server mid-job."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(buffer, "JPEG")
    return buffer.getvalue()


def sqlite_state(data_dir: Path, job_id: str) -> str:
    with sqlite3.connect(data_dir / "wirelab.db") as db:
        (data,) = db.execute(
            "SELECT data FROM events WHERE topic = ? ORDER BY version DESC LIMIT 1", (f"jobs/{job_id}",)
        ).fetchone()
    state: str = json.loads(data)["state"]
    return state

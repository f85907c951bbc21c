"""Our upload client (`wirelab.clients.upload`, `wirelab upload`) against a real server, tus 1.0.0.

The server runs without the pipeline, and most uploads ask for no targets, so no image job does work.
Interrupted uploads go through a relay that passes 8 MiB/s, so they are cut part-way on any machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import os
import random
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

from tests.clients.slow_relay import SlowRelay
from wirelab.clients import upload as upload_module
from wirelab.clients.files import range_digest
from wirelab.clients.jobs import ServiceError
from wirelab.clients.resume import Fingerprint, ResumeFile
from wirelab.clients.upload import Uploader, UploadResult, VerificationError, split
from wirelab.testing import ServerProcess, free_port

MiB = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}
WIRELAB = [sys.executable, "-m", "wirelab"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("uploads")
    with ServerProcess(data_dir, "--no-pipeline", "--max-image-size", str(64 * MiB)) as process:
        yield process


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "wirelab" / "uploads.json"


def image_file(path: Path, size: int, *, seed: int = 1) -> Path:
    """A JPEG of noise padded with random bytes to `size`: the server takes it for an image."""
    rng = random.Random(seed)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (32, 32), rng.randbytes(32 * 32 * 3)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue() + rng.randbytes(size - len(buffer.getvalue())))
    return path


def assert_stored(server: ServerProcess, result: UploadResult, file: Path) -> None:
    """The image the server stored is the file, byte for byte, and the client says so too."""
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    assert result.image["sha256"] == digest
    assert httpx.get(f"{server.url}/images/{result.image['id']}").json() == result.image
    assert (
        hashlib.sha256((server.data_dir / "images" / result.image["id"]).read_bytes()).hexdigest() == digest
    )


def upload(server: ServerProcess, file: Path, state: Path, **options: Any) -> tuple[UploadResult, Uploader]:
    async def run() -> tuple[UploadResult, Uploader]:
        async with Uploader(server.url, state_path=state, **{"targets": [], **options}) as uploader:
            return await uploader.upload(file), uploader

    return asyncio.run(run())


def head_offset(url: str) -> int:
    response = httpx.head(url, headers=TUS)
    assert response.status_code == 200, response
    return int(response.headers["upload-offset"])


def settled_offset(url: str) -> int:
    """The upload's offset once it stops moving (the server may still be reading a cut-off PATCH)."""
    offset = head_offset(url)
    while True:
        time.sleep(0.3)
        again = head_offset(url)
        if again == offset:
            return offset
        offset = again


def saved_urls(state: Path) -> list[str]:
    if not state.exists():
        return []
    uploads = json.loads(state.read_text())["uploads"]
    return [url for entry in uploads.values() for url in entry["parts"] if url]


# -- the client -----------------------------------------------------------------------------------


def test_a_file_goes_in_chunks_and_its_sha256_is_verified(
    server: ServerProcess, tmp_path: Path, state: Path
) -> None:
    """tus 1.0.0 creation + core protocol: one POST, then PATCHes of `chunk` bytes at rising offsets."""
    file = image_file(tmp_path / "photo.jpg", 5 * MiB + 123)
    progress: list[tuple[int, int]] = []
    result, uploader = upload(server, file, state, chunk=MiB, on_progress=lambda *p: progress.append(p))
    assert_stored(server, result, file)
    assert result.job is None and not result.resumed
    assert dict(uploader.statistics.requests) == {"POST": 1, "PATCH": 6, "GET": 1}
    assert uploader.statistics.bytes_sent == file.stat().st_size
    assert progress[-1] == (file.stat().st_size, file.stat().st_size)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert saved_urls(state) == [], "a finished upload is forgotten"


def test_parallel_parts_are_joined_by_one_final_upload(
    server: ServerProcess, tmp_path: Path, state: Path
) -> None:
    """tus concatenation: N partial uploads of contiguous ranges, then `Upload-Concat: final;...`."""
    file = image_file(tmp_path / "photo.jpg", 6 * MiB + 5)
    result, uploader = upload(server, file, state, chunk=MiB, parallel=4)
    assert_stored(server, result, file)
    assert uploader.statistics.requests["POST"] == 5
    assert uploader.statistics.requests["PATCH"] == 4 * 2


def test_parts_are_contiguous_and_never_empty() -> None:
    assert split(10, 3) == [(0, 3), (3, 6), (6, 10)]
    assert split(2, 4) == [(0, 1), (1, 2)]
    assert split(7, 1) == [(0, 7)]


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha256"])
def test_chunks_carry_their_checksum(
    server: ServerProcess, tmp_path: Path, state: Path, algorithm: str
) -> None:
    """tus checksum extension: every PATCH carries `Upload-Checksum: <algorithm> <base64>`."""
    file = image_file(tmp_path / "photo.jpg", 3 * MiB)
    result, _ = upload(server, file, state, chunk=MiB, checksum=algorithm)
    assert_stored(server, result, file)


def test_a_checksum_mismatch_is_reported_and_the_upload_resumes_later(
    server: ServerProcess, tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """tus checksum extension: 460 discards the chunk; the upload stays, at the offset before it."""
    file = image_file(tmp_path / "photo.jpg", 3 * MiB)
    calls = 0

    async def damaged_second_chunk(path: Path, start: int, end: int, algorithm: str) -> bytes:
        nonlocal calls
        calls += 1
        digest = await range_digest(path, start, end, algorithm)
        return bytes(b ^ 0xFF for b in digest) if calls == 2 else digest

    monkeypatch.setattr(upload_module, "range_digest", damaged_second_chunk)
    with pytest.raises(ServiceError) as caught:
        upload(server, file, state, chunk=MiB, checksum="sha1")
    assert caught.value.status == 460 and "Checksum Mismatch" in str(caught.value)
    [url] = saved_urls(state)
    assert head_offset(url) == MiB
    monkeypatch.undo()
    result, uploader = upload(server, file, state, chunk=MiB, checksum="sha1")
    assert_stored(server, result, file)
    assert result.resumed and uploader.statistics.requests["HEAD"] == 1
    assert uploader.statistics.bytes_sent == 2 * MiB


def test_other_bytes_stored_than_the_files_is_an_error(
    server: ServerProcess, tmp_path: Path, state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def wrong_sha256(path: Path) -> str:
        return "0" * 64

    monkeypatch.setattr(upload_module, "file_sha256", wrong_sha256)
    with pytest.raises(VerificationError, match="sha256"):
        upload(server, image_file(tmp_path / "photo.jpg", MiB), state)


def test_a_refused_upload_is_not_kept_for_a_rerun(
    server: ServerProcess, tmp_path: Path, state: Path
) -> None:
    """Bytes that are no image: 415 at the first PATCH, and the server ends the upload."""
    file = tmp_path / "notes.txt"
    file.write_bytes(b"not an image, " * 1000)
    with pytest.raises(ServiceError) as caught:
        upload(server, file, state)
    assert caught.value.status == 415
    assert saved_urls(state) == []


def test_targets_reach_the_server(server: ServerProcess, tmp_path: Path, state: Path) -> None:
    """`targets` metadata: absent asks for every output (a job starts), empty for none."""
    file = image_file(tmp_path / "photo.jpg", MiB)
    assert upload(server, file, state, targets=None)[0].job is not None
    assert upload(server, file, state, targets=["480p"])[0].job is not None
    assert upload(server, file, state, targets=[])[0].job is None


def test_a_single_request_upload_is_verified_too(
    server: ServerProcess, tmp_path: Path, state: Path
) -> None:
    file = image_file(tmp_path / "photo.jpg", 2 * MiB)

    async def run() -> tuple[UploadResult, Uploader]:
        async with Uploader(server.url, state_path=state, targets=[]) as uploader:
            return await uploader.upload_single(file), uploader

    result, uploader = asyncio.run(run())
    assert_stored(server, result, file)
    assert result.url is None and result.job is None
    assert dict(uploader.statistics.requests) == {"POST": 1}


# -- resuming -------------------------------------------------------------------------------------


@pytest.mark.parametrize("parallel", [1, 3])
def test_a_cancelled_upload_resumes_with_one_head_per_url(
    server: ServerProcess, tmp_path: Path, state: Path, parallel: int
) -> None:
    """tus 1.0.0 core protocol: a new client asks HEAD for Upload-Offset and sends only the rest."""
    file = image_file(tmp_path / "photo.jpg", 12 * MiB)
    size = file.stat().st_size

    async def cut_at_half(relay: SlowRelay) -> None:
        task: asyncio.Task[UploadResult] | None = None

        def on_progress(done: int, total: int) -> None:
            if task is not None and done >= total // 2:
                task.cancel()

        async with Uploader(
            relay.url, state_path=state, targets=[], chunk=MiB, parallel=parallel, on_progress=on_progress
        ) as uploader:
            task = asyncio.ensure_future(uploader.upload(file))
            with pytest.raises(asyncio.CancelledError):
                await task
            assert uploader.resumable

    async def rerun(relay: SlowRelay) -> tuple[UploadResult, Uploader]:
        async with Uploader(
            relay.url, state_path=state, targets=[], chunk=MiB, parallel=parallel
        ) as uploader:
            return await uploader.upload(file), uploader

    with SlowRelay(server.port, rate=8 * MiB) as relay:
        asyncio.run(cut_at_half(relay))
        urls = saved_urls(state)
        assert len(urls) == parallel
        held = sum(settled_offset(url) for url in urls)
        assert 0 < held < size
        result, uploader = asyncio.run(rerun(relay))
    assert_stored(server, result, file)
    assert result.resumed
    assert uploader.statistics.requests["HEAD"] == parallel
    assert uploader.statistics.requests["POST"] == (0 if parallel == 1 else 1)
    assert uploader.statistics.bytes_sent == size - held


def test_a_killed_cli_upload_resumes_from_the_servers_offset(
    server: ServerProcess, tmp_path: Path, state: Path
) -> None:
    """SIGKILL mid-PATCH: the URL was written down before the first byte, the server kept what arrived,
    and the rerun costs one HEAD, then only the missing bytes."""
    file = image_file(tmp_path / "photo.jpg", 16 * MiB)
    size, chunk = file.stat().st_size, MiB
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with SlowRelay(server.port, rate=4 * MiB) as relay:
        command = [
            *WIRELAB,
            "upload",
            str(file),
            "--url",
            relay.url,
            "--targets",
            "none",
            "--chunk",
            "1MiB",
        ]
        child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = _wait_for(lambda: saved_urls(state))[0]
            _wait_for(lambda: head_offset(url) >= 3 * MiB)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
        held = settled_offset(url)
        assert 0 < held < size

        async def rerun() -> tuple[UploadResult, Uploader]:
            async with Uploader(relay.url, state_path=state, targets=[], chunk=chunk) as uploader:
                return await uploader.upload(file), uploader

        result, uploader = asyncio.run(rerun())
    assert_stored(server, result, file)
    assert result.url == url and result.resumed
    statistics = uploader.statistics
    assert dict(statistics.requests) == {"HEAD": 1, "PATCH": math.ceil((size - held) / chunk), "GET": 1}
    assert statistics.bytes_sent == size - held < size
    assert statistics.refused == 0


def test_an_upload_the_server_no_longer_has_starts_over(
    server: ServerProcess, tmp_path: Path, state: Path
) -> None:
    """404 (or 410) to the resuming HEAD: the saved URL is useless, a new upload is made."""
    file = image_file(tmp_path / "photo.jpg", 2 * MiB)
    dead = f"{server.url}/uploads/{'0' * 32}"
    fingerprint = Fingerprint.of(server.url, file, 1)
    ResumeFile(state).save_part(fingerprint, 0, dead)
    result, uploader = upload(server, file, state, chunk=MiB)
    assert_stored(server, result, file)
    assert result.url != dead and not result.resumed
    assert dict(uploader.statistics.requests) == {"HEAD": 1, "POST": 1, "PATCH": 2, "GET": 1}


def _wait_for(condition: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
    return value


# -- the command ----------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WIRELAB, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )


def test_the_command_prints_the_verified_image(server: ServerProcess, tmp_path: Path) -> None:
    file = image_file(tmp_path / "photo.jpg", 3 * MiB)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    for mode in (["--chunk", "512KiB", "--parallel", "2", "--checksum", "md5"], ["--single"]):
        done = _cli("upload", str(file), "--server", server.url, "--targets", "none", *mode, env=env)
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        assert printed["verified"] and printed["image"]["sha256"] == digest and printed["job"] is None
        assert f"sha256 {digest} verified" in done.stderr and "no job started" in done.stderr
    with_job = _cli("upload", str(file), "--url", server.url, "--targets", "480p", env=env)
    job = json.loads(with_job.stdout)["job"]
    assert with_job.returncode == 0 and f"job {job}" in with_job.stderr


def test_the_command_exit_codes(server: ServerProcess, tmp_path: Path) -> None:
    file = image_file(tmp_path / "photo.jpg", MiB)
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    bad_size = _cli("upload", str(file), "--url", server.url, "--chunk", "4 parsecs", env=env)
    assert bad_size.returncode == 2 and "a size is a number of bytes" in bad_size.stderr
    bad_target = _cli("upload", str(file), "--url", server.url, "--targets", "8k", env=env)
    assert bad_target.returncode == 2 and "480p" in bad_target.stderr
    refused = _cli("upload", str(text), "--url", server.url, env=env)
    assert refused.returncode == 1 and "415" in refused.stderr
    unreachable = _cli("upload", str(file), "--url", f"http://127.0.0.1:{free_port()}", env=env)
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(
    server: ServerProcess, tmp_path: Path, state: Path
) -> None:
    file = image_file(tmp_path / "photo.jpg", 12 * MiB)
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    with SlowRelay(server.port, rate=2 * MiB) as relay:
        command = [*WIRELAB, "upload", str(file), "--url", relay.url, "--targets", "none"]
        child = subprocess.Popen(
            command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        url = _wait_for(lambda: saved_urls(state))[0]
        _wait_for(lambda: head_offset(url) > 0)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
        assert child.returncode == 130, err
        assert "the same command resumes it" in err and out == ""
        rerun = _cli("upload", str(file), "--url", relay.url, "--targets", "none", env=env)
    assert rerun.returncode == 0, rerun.stderr
    printed = json.loads(rerun.stdout)
    assert printed["resumed"] and printed["upload"] == url and "(resumed)" in rerun.stderr

"""`wirelab bench upload`: one big image uploaded every way we have, beside the single request (the peer).

Theory of operation: one file (a small real JPEG, then random bytes, so the server takes it for an
image) and one `wirelab up` process (no pipeline; every upload asks for no targets, so no job runs and
only the upload is measured). Each mode in turn uploads the file with `wirelab.clients.upload`,
straight to the server:

    single          POST /images, the whole file as one streamed request body (the peer)
    tus-1m ... 64m  tus, one upload filled by PATCHes of that many MiB
    tus-parallel-4  tus concatenation: four partial uploads of contiguous quarters side by side, joined
                    by one final POST
    tus-resumed-3   tus with 8 MiB PATCHes, cut off three times mid-PATCH at about 25, 50 and 75% (the
                    client's task is cancelled, so its connection closes with bytes in flight, as when
                    a client dies), each time followed by a rerun that finds the upload URL in the
                    resume file, HEADs it and sends the rest

Goodput is the file's size over the wall time from the first request to the verified sha256: every
mode ends by checking that the stored image's sha256 is the file's. The server's RSS is sampled every
5 ms during each mode (`PeakRss`); since one server serves every mode, "before" is where the mode
started from. Each mode's image is removed once verified, so every mode writes to the same file
system (left in place, they made each later mode slower, whichever it was). Requests are counted by
the client, every method; for tus-resumed-3 the round trips
each resume costs are the HEAD plus any PATCH the server refused (423 or 409) because the dying PATCH
was still being written down when the rerun's HEAD was answered.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from rich.console import Console
from rich.progress import Progress

from wirelab.bench import runner
from wirelab.bench.report import Column, PeakRss, cpu_seconds, print_table, write_json
from wirelab.clients.upload import Uploader, UploadResult, VerificationError
from wirelab.testing import ServerProcess

__all__ = ["MODES", "Mode", "UploadPlan", "make_image", "measure", "run_upload", "summary"]

MiB = 1 << 20
PEER = "single"


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    chunk: int = 8 * MiB
    parallel: int = 1
    cuts: int = 0
    single: bool = False


MODES = {
    mode.name: mode
    for mode in (
        Mode(PEER, single=True),
        Mode("tus-1m", chunk=MiB),
        Mode("tus-8m", chunk=8 * MiB),
        Mode("tus-64m", chunk=64 * MiB),
        Mode("tus-parallel-4", parallel=4),
        Mode("tus-resumed-3", cuts=3),
    )
}

COLUMNS = (
    Column("mode", "mode"),
    Column("mib_per_s", "MiB/s", ",.0f"),
    Column("ratio_vs_single", "vs single", ".2f"),
    Column("seconds", "seconds", ".2f"),
    Column("requests", "requests", ","),
    Column("server_rss_before_mib", "RSS before MiB", ".0f"),
    Column("server_peak_rss_mib", "peak RSS MiB", ".0f"),
    Column("server_cpu_s", "srv CPU s", ".2f"),
    Column("round_trips_per_resume", "trips/resume", ".1f"),
    Column("sha256_ok", "sha256"),
)


@dataclass(frozen=True, slots=True)
class UploadPlan:
    size: int = 256 * MiB
    modes: tuple[str, ...] = tuple(MODES)


def make_image(path: Path, size: int) -> None:
    """`size` bytes: a 64x64 JPEG of noise (what the server sniffs), then random padding."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(buffer, "JPEG")
    head = buffer.getvalue()
    with path.open("wb") as file:
        file.write(head)
        left = size - len(head)
        while left > 0:
            block = os.urandom(min(16 * MiB, left))
            file.write(block)
            left -= len(block)


# -- one mode ---------------------------------------------------------------------------------------


async def measure(
    mode: Mode, server: ServerProcess, file: Path, size: int, work_dir: Path, progress: Progress
) -> dict[str, Any]:
    """Upload `file` (`size` bytes) the way `mode` says, with the server's RSS and CPU watched; one row."""
    task = progress.add_task(mode.name, total=size)
    cutter = _Cutter()

    def on_progress(done: int, total: int) -> None:
        progress.update(task, completed=done)
        cutter.observe(done)

    uploader = Uploader(
        server.url,
        chunk=mode.chunk,
        parallel=mode.parallel,
        targets=[],
        state_path=work_dir / f"{mode.name}.json",
        on_progress=on_progress,
    )
    cpu = cpu_seconds(server.pid)
    try:
        with PeakRss(server.pid) as rss:
            started = time.perf_counter()
            result = await _upload(mode, uploader, file, _cut_points(size, mode), cutter, progress.console)
            seconds = time.perf_counter() - started
    finally:
        await uploader.aclose()
    row = _row(mode, size, seconds, rss, cpu_seconds(server.pid) - cpu, uploader, result)
    if isinstance(result, UploadResult):
        await asyncio.to_thread(_discard_image, server.data_dir, result.image["id"])
    return row


def _discard_image(data_dir: Path, image_id: str) -> None:
    """Remove a verified image behind the server's back (it keeps no index of them; see above)."""
    for path in (data_dir / "images" / image_id, data_dir / "images" / f"{image_id}.json"):
        path.unlink(missing_ok=True)


async def _upload(
    mode: Mode, uploader: Uploader, file: Path, cuts: list[int], cutter: _Cutter, console: Console
) -> UploadResult | VerificationError:
    """The upload, cut off and rerun at each of `cuts`; a sha256 mismatch is a result, not a crash."""
    try:
        if mode.single:
            return await uploader.upload_single(file)
        for point in cuts:
            await cutter.cut_off(uploader.upload(file), point)
        return await uploader.upload(file)
    except VerificationError as exc:
        console.print(f"[red]{mode.name}: {exc}")
        return exc


def _cut_points(size: int, mode: Mode) -> list[int]:
    """Where to cut: near k/(cuts+1) of the file, moved off chunk boundaries so a PATCH is mid-body."""
    points = []
    for k in range(1, mode.cuts + 1):
        point = size * k // (mode.cuts + 1)
        if point % mode.chunk == 0:
            point += mode.chunk // 2
        points.append(min(point, size - 1))
    return points


class _Cutter:
    """Cancels an upload the moment the bytes handed to its connection reach a point: a client dying
    mid-PATCH, its connection closed with bytes in flight."""

    def __init__(self) -> None:
        self._point: int | None = None
        self._task: asyncio.Future[UploadResult] | None = None

    def observe(self, done: int) -> None:
        if self._task is not None and self._point is not None and done >= self._point:
            self._point = None
            self._task.cancel()

    async def cut_off(self, upload: Awaitable[UploadResult], point: int) -> None:
        task = asyncio.ensure_future(upload)
        self._point, self._task = point, task
        try:
            await asyncio.wait([task])
        finally:
            task.cancel()
            await asyncio.wait([task])
            self._task = None
        if not task.cancelled():
            task.result()  # an error is raised as itself
            raise RuntimeError(f"the upload finished before it could be cut off at {point} bytes")


def _row(
    mode: Mode,
    size: int,
    seconds: float,
    rss: PeakRss,
    cpu_s: float,
    uploader: Uploader,
    result: UploadResult | VerificationError,
) -> dict[str, Any]:
    statistics = uploader.statistics
    refused = statistics.refused
    heads = statistics.requests["HEAD"]
    return {
        "mode": mode.name,
        "impl": "post-images" if mode.single else "tus",
        "mib_per_s": size / MiB / seconds,
        "seconds": seconds,
        "requests": statistics.total,
        "server_rss_before_mib": rss.before / MiB,
        "server_peak_rss_mib": rss.peak / MiB,
        "server_rss_growth_mib": (rss.peak - rss.before) / MiB,
        "server_cpu_s": cpu_s,
        "sha256_ok": isinstance(result, UploadResult),
        "bytes": size,
        "bytes_sent": statistics.bytes_sent,
        "chunk_bytes": None if mode.single else mode.chunk,
        "parallel": mode.parallel,
        "requests_by_method": dict(statistics.requests),
        "resumes": mode.cuts,
        "heads_per_resume": heads / mode.cuts if mode.cuts else None,
        "refused_per_resume": refused / mode.cuts if mode.cuts else None,
        "round_trips_per_resume": (heads + refused) / mode.cuts if mode.cuts else None,
    }


# -- the whole scenario ----------------------------------------------------------------------------


def run_upload(plan: UploadPlan, *, json_path: Path | None, console: Console, progress: Progress) -> int:
    """Make the file, start the server, upload in every mode, print the table; the exit status."""
    work_dir = Path(tempfile.mkdtemp(prefix="wirelab-upload-"))
    try:
        file = work_dir / "noise.jpg"
        make_image(file, plan.size)
        server_args = (
            "--no-pipeline",
            "--max-image-size",
            str(max(plan.size, 64 * MiB)),
            "--log-level",
            "warning",
        )
        with progress, ServerProcess(work_dir / "server", *server_args) as server:
            rows = [
                runner.run(measure(MODES[name], server, file, plan.size, work_dir, progress))
                for name in plan.modes
            ]
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    _add_ratios(rows)
    print_table(console, f"uploading one {plan.size / MiB:,.0f} MiB image", COLUMNS, rows)
    for line in summary(rows):
        console.print(line)
    if json_path is not None:
        write_json(json_path, "upload", rows, plan={"size_bytes": plan.size, "modes": list(plan.modes)})
    return 0 if all(row["sha256_ok"] for row in rows) else 1


def _add_ratios(rows: Sequence[dict[str, Any]]) -> None:
    """Each mode's goodput and peak RSS over the single request's, when it ran."""
    peer = next((row for row in rows if row["mode"] == PEER), None)
    for row in rows:
        row["ratio_vs_single"] = row["mib_per_s"] / peer["mib_per_s"] if peer else None
        row["peak_rss_vs_single"] = (
            row["server_peak_rss_mib"] / peer["server_peak_rss_mib"] if peer else None
        )


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What the table shows, in words: costs of chunking and resuming, computed from it."""
    lines = []
    for row in rows:
        if row["resumes"]:
            lines.append(
                f"{row['mode']}: {row['round_trips_per_resume']:.1f} round trips per resume "
                f"({row['heads_per_resume']:.1f} HEAD + {row['refused_per_resume']:.1f} PATCH refused "
                f"while the cut-off one was still being written), "
                f"{(row['bytes_sent'] - row['bytes']) / MiB:,.1f} MiB sent twice"
            )
    growth = ", ".join(f"{row['mode']} {row['server_rss_growth_mib']:+.0f}" for row in rows)
    lines.append(f"server RSS growth during each mode, MiB: {growth}")
    return lines

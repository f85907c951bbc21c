"""The image work itself, with Pillow on real bytes: compress (re-encode) and resize to a target.

Outputs are written to a temporary name and renamed into `outputs/JOB/NAME.jpg`, so a message
processed twice (at-least-once delivery) overwrites its output instead of adding a second one, and a
reader never sees half a file. Pillow releases the GIL while it decodes and encodes, so the work runs
in a worker thread and the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

__all__ = ["Output", "compress", "output_info", "resize"]

JPEG_QUALITY = 82


@dataclass(frozen=True, slots=True)
class Output:
    name: str
    width: int
    height: int
    bytes: int
    sha256: str

    def to_json(self, job_id: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "url": f"/jobs/{job_id}/outputs/{self.name}",
        }


async def compress(source: Path, destination: Path) -> None:
    await asyncio.to_thread(_compress, source, destination)


async def resize(source: Path, destination: Path, height: int) -> None:
    await asyncio.to_thread(_resize, source, destination, height)


def output_info(path: Path) -> Output:
    data = path.read_bytes()
    with Image.open(path) as image:
        width, height = image.size
    return Output(path.stem, width, height, len(data), hashlib.sha256(data).hexdigest())


def _compress(source: Path, destination: Path) -> None:
    with Image.open(source) as image:
        _save(image.convert("RGB"), destination)


def _resize(source: Path, destination: Path, height: int) -> None:
    """Scale to `height` pixels tall, keeping the aspect ratio; never upscale a smaller image."""
    with Image.open(source) as image:
        height = min(height, image.height)
        width = max(1, round(image.width * height / image.height))
        _save(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), destination)


def _save(image: Image.Image, destination: Path) -> None:
    """Write under a name of our own, then rename over the output.

    The name is unique even between threads of one process. A writer killed half-way leaves its
    temporary file behind, and its message comes back: that is this write, so it sweeps them.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        image.save(temporary, "JPEG", quality=JPEG_QUALITY, optimize=True)
        temporary.replace(destination)
    finally:
        temporary.unlink(missing_ok=True)
    for stale in destination.parent.glob(f".{destination.name}.*.tmp"):
        stale.unlink(missing_ok=True)

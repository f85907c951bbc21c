"""What the tus interop tests upload, and how they check what the server stored (tus 1.0.0, contract §4).

Theory of operation: the source is a real JPEG (Pillow, random noise) padded with random bytes to a few
MiB, so the server takes it as an image and it needs several PATCH requests. Whichever client sent it,
the proof is the same: GET /uploads/<id> says complete and names a stored image whose sha256, and the
file D/images/<image id>, are those of the source.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
from typing import Any

import httpx
from PIL import Image

from wirelab.testing import ServerProcess

__all__ = ["TUS_HEADERS", "image_bytes", "stored_image", "upload_id"]

TUS_HEADERS = {"Tus-Resumable": "1.0.0"}


def image_bytes(size: int, *, seed: int) -> bytes:
    """`size` bytes starting with a complete 64x64 JPEG of noise, then random padding."""
    rng = random.Random(seed)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), rng.randbytes(64 * 64 * 3)).save(buffer, "JPEG")
    head = buffer.getvalue()
    assert len(head) < size
    return head + rng.randbytes(size - len(head))


def upload_id(server: ServerProcess, url: str) -> str:
    """The id of an upload URL, which must be the absolute URL the contract promises."""
    match = re.fullmatch(re.escape(server.url) + r"/uploads/([0-9a-f]{32})", url)
    assert match, f"{url!r} is not {server.url}/uploads/<32 hex digits>"
    return match[1]


def stored_image(server: ServerProcess, url: str, source: bytes) -> dict[str, Any]:
    """The upload at `url` is complete, with no job, and its stored image is exactly `source`."""
    state = httpx.get(f"{server.url}/uploads/{upload_id(server, url)}").json()
    assert state["complete"] is True, state
    assert (state["offset"], state["length"]) == (len(source), len(source)), state
    assert state["job"] is None, f"`targets` was empty, yet a job started: {state}"
    image: dict[str, Any] = state["image"]
    assert image is not None, state
    digest = hashlib.sha256(source).hexdigest()
    assert (image["sha256"], image["bytes"], image["media_type"]) == (digest, len(source), "image/jpeg")
    assert httpx.get(f"{server.url}/images/{image['id']}").json() == image
    on_disk = (server.data_dir / "images" / image["id"]).read_bytes()
    assert hashlib.sha256(on_disk).hexdigest() == digest, "the image file differs from the source"
    return image

"""Stored images on local disk: streamed in, hashed on the way, visible only once complete.

Theory of operation: bytes go to `incoming/ID.part` while their sha256 is computed; only a finished,
recognised image is renamed into place (a rename is atomic), with its metadata beside it. Anything
else, a client gone mid-body, a body over the limit, bytes that are no image, removes the part file,
so no half-written image is ever seen. Disk writes run in a worker thread: a slow disk must not stall
every other connection of the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from wirelab.errors import NotFound, ProblemError
from wirelab.proto.imagetype import SNIFF_BYTES, sniff_image_type

__all__ = ["ImageStore", "StoredImage", "UnsupportedMediaType"]

_ID = re.compile(r"^[0-9a-f]{32}$")


class UnsupportedMediaType(ProblemError):
    status = 415
    title = "Unsupported Media Type"


@dataclass(frozen=True, slots=True)
class StoredImage:
    id: str
    sha256: str
    bytes: int
    media_type: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ImageStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._incoming = root / "incoming"

    def path(self, image_id: str) -> Path:
        """The file of a stored image; ids are checked, so a client can never name another path."""
        if not _ID.match(image_id) or not (self.root / image_id).is_file():
            raise NotFound(f"no image {image_id}")
        return self.root / image_id

    def info(self, image_id: str) -> StoredImage:
        meta = json.loads((self.path(image_id).with_suffix(".json")).read_text())
        return StoredImage(**meta)

    async def save(self, chunks: AsyncIterator[bytes]) -> StoredImage:
        image_id = secrets.token_hex(16)
        part = self._incoming / f"{image_id}.part"
        await asyncio.to_thread(self._incoming.mkdir, parents=True, exist_ok=True)
        file = await asyncio.to_thread(part.open, "wb")
        try:
            digest, size, media_type = await self._write(chunks, file)
            await asyncio.to_thread(file.close)
            image = StoredImage(image_id, digest, size, media_type, _now())
            await asyncio.to_thread(self._publish, part, image)
            return image
        finally:
            await asyncio.to_thread(_discard, file, part)

    async def _write(self, chunks: AsyncIterator[bytes], file: IO[bytes]) -> tuple[str, int, str]:
        digest, size, head, media_type = hashlib.sha256(), 0, b"", None
        async for chunk in chunks:
            if media_type is None:
                head += chunk[:SNIFF_BYTES]
                if len(head) >= SNIFF_BYTES:
                    media_type = _recognised(head)
            digest.update(chunk)
            size += len(chunk)
            await asyncio.to_thread(file.write, chunk)
        return digest.hexdigest(), size, media_type or _recognised(head)

    def _publish(self, part: Path, image: StoredImage) -> None:
        self.root.joinpath(f"{image.id}.json").write_text(json.dumps(image.to_json()))
        part.rename(self.root / image.id)


def _recognised(head: bytes) -> str:
    media_type = sniff_image_type(head)
    if media_type is None:
        raise UnsupportedMediaType("the body is not a PNG, JPEG, GIF or WebP image")
    return media_type


def _discard(file: IO[bytes], part: Path) -> None:
    """Close and remove the part file if it is still there (it is not after a successful rename)."""
    file.close()
    part.unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

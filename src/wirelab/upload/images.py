"""Stored images on local disk: streamed in, hashed on the way, visible only once complete.

Theory of operation: bytes go to a file outside the store (`incoming/ID.part`, or a finished tus
upload) while their sha256 is computed; only a finished, recognised image is renamed into place (a
rename is atomic), its metadata written beside it first. Anything else, a client gone mid-body, a
body over the limit, bytes that are no image, removes the part file, so no half-written image is
ever seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from wirelab.errors import NotFound, UnsupportedMediaType
from wirelab.proto.imagetype import SNIFF_BYTES, sniff_image_type
from wirelab.upload.spool import spool

__all__ = ["ImageHook", "ImageStore", "StoredImage", "media_type_of"]

_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True, slots=True)
class StoredImage:
    id: str
    sha256: str
    bytes: int
    media_type: str
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


ImageHook = Callable[[StoredImage, tuple[str, ...]], Awaitable[str | None]]
"""Called once an upload is a stored image, with the targets it asked for: the id of the job it
started, or None. This is the seam to the image pipeline; `upload` knows nothing of jobs."""


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
        """Store a body; one that does not start like an image is refused at its first chunk."""
        image_id = secrets.token_hex(16)
        part = self._incoming / f"{image_id}.part"
        await asyncio.to_thread(self._incoming.mkdir, parents=True, exist_ok=True)
        file = await asyncio.to_thread(part.open, "wb")
        try:
            digest = hashlib.sha256()
            size = await spool(_checked_head(chunks), file, [digest])
            await asyncio.to_thread(file.close)
            return await asyncio.to_thread(self.adopt, part, image_id, digest.hexdigest(), size)
        finally:
            await asyncio.to_thread(_discard, file, part)

    def adopt(self, path: Path, image_id: str, sha256: str, size: int) -> StoredImage:
        """Move a complete file into the store (blocking: run it in a thread)."""
        with path.open("rb") as file:
            media_type = media_type_of(file.read(SNIFF_BYTES))
        image = StoredImage(image_id, sha256, size, media_type, _now())
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.joinpath(f"{image.id}.json").write_text(json.dumps(image.to_json()))
        path.rename(self.root / image.id)
        return image


def media_type_of(head: bytes) -> str:
    """The media type of an image starting with `head`; anything else is a 415."""
    media_type = sniff_image_type(head)
    if media_type is None:
        raise UnsupportedMediaType("the body is not a PNG, JPEG, GIF or WebP image")
    return media_type


async def _checked_head(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Refuse a body that is no image as soon as its first chunk shows it (it nearly always can)."""
    first = True
    async for chunk in chunks:
        if first and len(chunk) >= SNIFF_BYTES:
            media_type_of(chunk)
        first = False
        yield chunk


def _discard(file: IO[bytes], part: Path) -> None:
    """Close and remove the part file if it is still there (it is not after a successful rename)."""
    file.close()
    part.unlink(missing_ok=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")

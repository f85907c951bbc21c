"""Reading a local file for an upload without blocking the event loop: ranges as request bodies, and
the file's sha256 in a worker thread.

Uploads stream the file, never hold it: a body is an async iterator over one byte range, read in
blocks in a worker thread, so a 64 MiB PATCH costs a block of memory, not 64 MiB. The sha256 that
proves the server stored the right bytes is computed in another thread meanwhile (hashlib and file
reads release the GIL), and stops early when the upload is abandoned.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO

from wirelab.errors import WirelabError

__all__ = ["BLOCK_BYTES", "FileChanged", "file_sha256", "range_digest", "read_range"]

BLOCK_BYTES = 1 << 20


class FileChanged(WirelabError):
    """The file being uploaded changed under us (it got shorter)."""


async def read_range(
    path: Path, start: int, end: int, *, on_bytes: Callable[[int], None] | None = None
) -> AsyncIterator[bytes]:
    """Bytes [start, end) of `path` in blocks; `on_bytes(n)` after each block is handed on."""
    file = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(file.seek, start)
        position = start
        while position < end:
            block = await asyncio.to_thread(file.read, min(BLOCK_BYTES, end - position))
            if not block:
                raise FileChanged(f"{path} is shorter than {end} bytes: it changed during the upload")
            position += len(block)
            yield block
            if on_bytes is not None:
                on_bytes(len(block))
    finally:
        file.close()


async def file_sha256(path: Path) -> str:
    """The file's sha256 (hex), computed in a worker thread that stops if we are cancelled."""
    stop = threading.Event()
    try:
        return await asyncio.to_thread(_sha256, path, stop)
    finally:
        stop.set()


async def range_digest(path: Path, start: int, end: int, algorithm: str) -> bytes:
    """The `algorithm` digest of bytes [start, end) of `path`, computed in a worker thread."""
    return await asyncio.to_thread(_range_digest, path, start, end, algorithm)


def _range_digest(path: Path, start: int, end: int, algorithm: str) -> bytes:
    digest = hashlib.new(algorithm)
    with path.open("rb") as file:
        file.seek(start)
        _feed(file, end - start, digest.update, threading.Event())
    return digest.digest()


def _sha256(path: Path, stop: threading.Event) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        _feed(file, None, digest.update, stop)
    return digest.hexdigest()


def _feed(
    file: IO[bytes], size: int | None, update: Callable[[bytes], None], stop: threading.Event
) -> None:
    """Pass `size` bytes of `file` (None: all the rest) to `update`, block by block, until `stop`."""
    left = size
    while not stop.is_set() and (left is None or left > 0):
        block = file.read(BLOCK_BYTES if left is None else min(BLOCK_BYTES, left))
        if not block:
            return
        update(block)
        if left is not None:
            left -= len(block)

"""Write a request body to a file as it arrives: in batches, off the event loop, hashed on the way.

A thread hop per network read (often 64 KiB) costs more than the write itself, so chunks are joined
into batches of about a MiB; the write and the hashing (hashlib releases the GIL on large buffers) run
in a worker thread while the event loop keeps serving other connections. Whatever happens to the body
(a client gone, a limit crossed), every byte received before it is on disk when `spool` returns or
raises, so a resumable upload can keep it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import IO, Any, Protocol

__all__ = ["BATCH_BYTES", "Digest", "spool"]

BATCH_BYTES = 1 << 20


class Digest(Protocol):
    def update(self, data: Any, /) -> None: ...


async def spool(chunks: AsyncIterator[bytes], file: IO[bytes], digests: Sequence[Digest] = ()) -> int:
    """Write every chunk to `file` at its position; the number of bytes written.

    On an error in `chunks` (a client gone, a limit crossed) what arrived is written before the
    error goes on, so `file.tell()` counts every byte received.
    """
    batch: list[bytes] = []
    written = pending = 0
    try:
        async for chunk in chunks:
            batch.append(chunk)
            pending += len(chunk)
            if pending >= BATCH_BYTES:
                data, batch, pending = b"".join(batch), [], 0
                await _write_batch(file, data, digests)
                written += len(data)
    except Exception:
        await _write_batch(file, b"".join(batch), digests)
        raise
    await _write_batch(file, b"".join(batch), digests)
    return written + pending


async def _write_batch(file: IO[bytes], data: bytes, digests: Sequence[Digest]) -> None:
    """Write in a worker thread; if we are cancelled meanwhile, let the write land before going on,
    so no thread is ever still writing into a file its caller has closed."""
    if not data:
        return
    write = asyncio.get_running_loop().run_in_executor(None, _write, file, data, digests)
    try:
        await asyncio.shield(write)
    except asyncio.CancelledError:
        await asyncio.wait([write])
        raise


def _write(file: IO[bytes], data: bytes, digests: Sequence[Digest]) -> None:
    for digest in digests:
        digest.update(data)
    file.write(data)

"""Write a request body to a file as it arrives: in batches, off the event loop, hashed on the way.

A thread hop per network read (often 64 KiB) costs more than the write itself, so chunks are joined
into batches; the write and the hashing (hashlib releases the GIL on large buffers) run in a worker
thread while the event loop goes on receiving the next batch, so the network and the disk work side
by side, one batch in flight at a time to keep the order. Whatever happens to the body (a client
gone, a limit crossed), every byte received before it is on disk when `spool` returns or raises, so
a resumable upload can keep it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import IO, Any, Protocol

__all__ = ["BATCH_BYTES", "Digest", "spool"]

BATCH_BYTES = 1 << 19


class Digest(Protocol):
    def update(self, data: Any, /) -> None: ...


async def spool(chunks: AsyncIterator[bytes], file: IO[bytes], digests: Sequence[Digest] = ()) -> int:
    """Write every chunk to `file` at its position; the number of bytes written.

    On an error in `chunks` (a client gone, a limit crossed) what arrived is written before the
    error goes on, so `file.tell()` counts every byte received.
    """
    loop = asyncio.get_running_loop()
    batch: list[bytes] = []
    written = pending = 0
    writing: asyncio.Future[None] | None = None
    try:
        async for chunk in chunks:
            batch.append(chunk)
            pending += len(chunk)
            if pending >= BATCH_BYTES:
                await _landed(writing)
                writing = loop.run_in_executor(None, _write, file, b"".join(batch), digests)
                written, batch, pending = written + pending, [], 0
    except Exception:
        await _landed(writing)
        _write(file, b"".join(batch), digests)
        raise
    except BaseException:
        await _landed(writing)
        raise
    await _landed(writing)
    if batch:
        await loop.run_in_executor(None, _write, file, b"".join(batch), digests)
    return written + pending


async def _landed(writing: asyncio.Future[None] | None) -> None:
    """Wait for the write in flight; if we are cancelled meanwhile, let it land before going on,
    so no thread is ever still writing into a file its caller has closed."""
    if writing is None:
        return
    try:
        await asyncio.shield(writing)
    except asyncio.CancelledError:
        await asyncio.wait([writing])
        raise


def _write(file: IO[bytes], data: bytes, digests: Sequence[Digest]) -> None:
    for digest in digests:
        digest.update(data)
    file.write(data)

"""Zero-copy forwarding of one direction of a TCP connection with Linux's splice(2).

Theory of operation: splice moves pages between a file descriptor and a pipe inside the kernel, so
bytes go socket -> pipe -> socket without ever being copied into Python. The pump splices what the
source socket holds into its own pipe, then drains the pipe into the destination, and only then reads
again: the pipe is always empty when we read, so EAGAIN on the read side means "the socket has nothing"
and on the write side "the destination's send buffer is full". Both wait on the event loop for
readiness (add_reader / add_writer), never block. At end of stream the pump shuts down writing on the
destination (forwarding the FIN) and returns; the other direction is not touched, which is what makes
half-close work.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
from collections.abc import Callable

__all__ = ["SPLICE_AVAILABLE", "splice_pump", "wait_ready"]

SPLICE_AVAILABLE = hasattr(os, "splice")
_PIPE_SIZE = 1 << 20  # bigger pipes move more per system call; the kernel may refuse (pipe-max-size)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)


async def wait_ready(fd: int, *, write: bool) -> None:
    """Wait until `fd` is readable (or writable): the event loop's readiness callbacks as a coroutine."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if write:
        loop.add_writer(fd, wake)
    else:
        loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        if write:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def splice_pump(src: socket.socket, dst: socket.socket, note: Callable[[int], None]) -> None:
    """Forward `src` to `dst` until end of stream, then forward the FIN; `note(n)` after each move."""
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    try:
        while (count := await _fill(src.fileno(), write_end)) > 0:
            await _drain(read_end, dst.fileno(), count)
            note(count)
    finally:
        os.close(read_end)
        os.close(write_end)
    with contextlib.suppress(OSError):  # the peer may be gone already; the other direction decides
        dst.shutdown(socket.SHUT_WR)


async def _fill(src: int, pipe: int) -> int:
    while True:
        try:
            return os.splice(src, pipe, _PIPE_SIZE, flags=_FLAGS)
        except BlockingIOError:
            await wait_ready(src, write=False)


async def _drain(pipe: int, dst: int, count: int) -> None:
    while count:
        try:
            count -= os.splice(pipe, dst, count, flags=_FLAGS)
        except BlockingIOError:
            await wait_ready(dst, write=True)

"""Zero-copy forwarding of one direction of a TCP connection with Linux's splice(2).

Theory of operation: splice moves pages between a file descriptor and a pipe inside the kernel, so
bytes go socket -> pipe -> socket without ever being copied into Python. The pump splices what the
source socket holds into its own pipe, then drains the pipe into the destination, and only then reads
again: the pipe is always empty when we read, so EAGAIN on the read side means "the socket has nothing"
and on the write side "the destination's send buffer is full". Both wait on the event loop for
readiness (add_reader / add_writer), never block. At end of stream the pump shuts down writing on the
destination (forwarding the FIN) and returns; the other direction is not touched, which is what makes
half-close work.

Creating a pipe and growing it costs more than a short connection's whole transfer, so pipes that end
a connection empty go back to a small pool for the next one (the event loop's thread is the only
user, so the pool needs no lock); a pipe that may still hold bytes is closed instead.
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
_POOL_LIMIT = 256
_idle_pipes: list[tuple[int, int]] = []


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
    read_end, write_end = _take_pipe()
    empty = False
    try:
        while (count := await _fill(src.fileno(), write_end)) > 0:
            await _drain(read_end, dst.fileno(), count)
            note(count)
        empty = True
    finally:
        _give_back(read_end, write_end, empty=empty)
    with contextlib.suppress(OSError):  # the peer may be gone already; the other direction decides
        dst.shutdown(socket.SHUT_WR)


def _take_pipe() -> tuple[int, int]:
    if _idle_pipes:
        return _idle_pipes.pop()
    read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    with contextlib.suppress(OSError):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
    return read_end, write_end


def _give_back(read_end: int, write_end: int, *, empty: bool) -> None:
    if empty and len(_idle_pipes) < _POOL_LIMIT:
        _idle_pipes.append((read_end, write_end))
    else:
        os.close(read_end)
        os.close(write_end)


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

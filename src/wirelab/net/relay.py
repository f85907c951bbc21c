"""Relay a TCP connection between two sockets, both directions at once, with half-close and idle timeout.

Theory of operation: each direction is a pump task that moves bytes until its source ends, then shuts
down writing on its destination. A FIN from the client therefore reaches the backend as a FIN while the
backend's reply keeps flowing back, as TCP intends (a client that sends a request, shuts down writing
and reads the whole answer keeps working through the balancer). The relay ends when both pumps have
ended, when one fails (a reset ends the whole connection: the other direction has no one left to talk
to) or when neither direction has moved a byte for `idle_timeout` seconds. Two data paths: `splice`
(zero-copy, Linux; see `wirelab.net.splice`) and `copy` (recv into a buffer, send it), kept side by
side so the benches can compare them. The sockets stay open: closing them is the caller's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from wirelab.net.splice import SPLICE_AVAILABLE, splice_pump

__all__ = ["SPLICE_AVAILABLE", "Outcome", "RelayResult", "Streams", "copy_pump", "relay", "relay_streams"]

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]

_COPY_BUFFER = 256 << 10
_POOL_LIMIT = 256
_idle_buffers: list[bytearray] = []
"""Buffers of finished copy pumps: zeroing 256 KiB per direction per connection was a quarter of a
short connection's cost. Only the event loop's thread uses them."""


class Outcome(enum.Enum):
    DONE = "done"  # both sides finished sending
    IDLE = "idle"  # idle timeout
    RESET = "reset"  # a socket error on one side


@dataclass(frozen=True, slots=True)
class RelayResult:
    """Bytes moved from `a` to `b` (`forward`) and back (`backward`), and how the relay ended."""

    forward: int
    backward: int
    outcome: Outcome


class _Flow:
    def __init__(self, now: float) -> None:
        self.counts = [0, 0]
        self.last = now

    def noter(self, index: int) -> Callable[[int], None]:
        loop = asyncio.get_running_loop()

        def note(count: int) -> None:
            self.counts[index] += count
            self.last = loop.time()

        return note


async def copy_pump(src: socket.socket, dst: socket.socket, note: Callable[[int], None]) -> None:
    """The copying data path: the same contract as `splice_pump`, through a buffer in user space."""
    loop = asyncio.get_running_loop()
    buffer = _idle_buffers.pop() if _idle_buffers else bytearray(_COPY_BUFFER)
    try:
        with memoryview(buffer) as view:
            while count := await loop.sock_recv_into(src, buffer):
                await loop.sock_sendall(dst, view[:count])
                note(count)
    finally:
        if len(_idle_buffers) < _POOL_LIMIT:
            _idle_buffers.append(buffer)
    with contextlib.suppress(OSError):  # the peer may be gone already; the other direction decides
        dst.shutdown(socket.SHUT_WR)


async def stream_pump(src: Streams, dst: Streams, note: Callable[[int], None]) -> None:
    """The stream data path: what `src` reads goes to `dst`, then EOF where the transport can send one."""
    reader, writer = src[0], dst[1]
    while data := await reader.read(_COPY_BUFFER):
        writer.write(data)
        note(len(data))
        await writer.drain()
    with contextlib.suppress(OSError):
        if writer.can_write_eof():
            writer.write_eof()


async def relay(
    a: socket.socket, b: socket.socket, *, splice: bool = True, idle_timeout: float | None = None
) -> RelayResult:
    """Move bytes between `a` and `b` until both directions end; off Linux `splice` means copy."""
    pump = splice_pump if splice and SPLICE_AVAILABLE else copy_pump
    return await _both_ways(lambda note: pump(a, b, note), lambda note: pump(b, a, note), idle_timeout)


async def relay_streams(a: Streams, b: Streams, *, idle_timeout: float | None = None) -> RelayResult:
    """Move bytes between two stream pairs until both directions end."""
    return await _both_ways(
        lambda note: stream_pump(a, b, note), lambda note: stream_pump(b, a, note), idle_timeout
    )


Pump = Callable[[Callable[[int], None]], Coroutine[Any, Any, None]]


async def _both_ways(forward: Pump, backward: Pump, idle_timeout: float | None) -> RelayResult:
    loop = asyncio.get_running_loop()
    flow = _Flow(loop.time())
    pending = {asyncio.create_task(forward(flow.noter(0))), asyncio.create_task(backward(flow.noter(1)))}
    outcome = Outcome.DONE
    try:
        while pending and outcome is Outcome.DONE:
            timeout = None if idle_timeout is None else flow.last + idle_timeout - loop.time()
            if timeout is not None and timeout <= 0:
                outcome = Outcome.IDLE
                break
            done, pending = await asyncio.wait(
                pending, timeout=timeout, return_when=asyncio.FIRST_EXCEPTION
            )
            for task in done:
                if isinstance(error := task.exception(), OSError):
                    outcome = Outcome.RESET
                elif error is not None:
                    raise error
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return RelayResult(flow.counts[0], flow.counts[1], outcome)

"""A flaky network in front of a server: some responses are lost after the server has committed them.

Theory of operation: the worst moment for a connection to drop is after the server did the work and
before its answer arrived, because the client cannot tell that from a request that never got there,
so it retries, and an endpoint that is not idempotent does the work twice. `FaultyProxy` plays that
moment for real on loopback. Each accepted connection carries one request (the client sends
`Connection: close`, so the server closes once it has answered, which is how the proxy knows where
the response ends without parsing HTTP). The proxy forwards the request, reads the server's whole
response, and then asks the `FaultSchedule` whether to deliver it or to reset the client's connection
without a byte of it.

The schedule is the logic and holds no I/O: a coin seeded once, drawn once per response in the order
responses complete, so a seed gives the same sequence of decisions on every run. (Which request meets
which decision still depends on how concurrent requests interleave; the counts do not.)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass

from wirelab.bench.loopback import LoopbackProxy, close_quietly

__all__ = ["FaultSchedule", "FaultStats", "FaultyProxy"]


@dataclass(frozen=True, slots=True)
class FaultStats:
    delivered: int = 0
    cut: int = 0


class FaultSchedule:
    """Which responses to lose: each one independently with probability `rate`, from a seeded coin."""

    def __init__(self, rate: float, *, seed: int) -> None:
        if not 0 <= rate <= 1:
            raise ValueError(f"a fault rate is between 0 and 1, not {rate}")
        self.rate = rate
        self._random = random.Random(seed)
        self._delivered = 0
        self._cut = 0

    def cut_next(self) -> bool:
        """Decide the fate of the next response: True to lose it, False to deliver it."""
        cut = self._random.random() < self.rate
        if cut:
            self._cut += 1
        else:
            self._delivered += 1
        return cut

    def statistics(self) -> FaultStats:
        return FaultStats(self._delivered, self._cut)


class FaultyProxy(LoopbackProxy):
    """Listens on a free loopback port, one request per connection, and loses the responses
    `schedule` says to; use `async with`."""

    def __init__(
        self, upstream_port: int, schedule: FaultSchedule, *, host: str = "127.0.0.1", timeout_s: float = 30
    ) -> None:
        super().__init__(upstream_port, host=host)
        self.schedule = schedule
        self._timeout_s = timeout_s

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request and its response, or its loss."""
        async with asyncio.timeout(self._timeout_s):
            up_reader, upstream = await self._connect_upstream()
            forward = asyncio.create_task(_forward(reader, upstream))
            try:
                response = await up_reader.read()  # the server closes once it has answered
            finally:
                forward.cancel()
                await asyncio.wait([forward])
                self._writers.discard(upstream)
                await close_quietly(upstream)
        if response and self.schedule.cut_next():
            writer.transport.abort()  # committed, then cut: the client sees a reset, not a byte
            return
        writer.write(response)
        await writer.drain()


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Client to server until the client's end-of-file, passed on as a half-close."""
    with contextlib.suppress(OSError):
        while data := await reader.read(64 * 1024):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()

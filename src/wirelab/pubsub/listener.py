"""What every engine's broadcast listener shares: a bounded backlog between its engine and its reader.

Theory of operation. An engine's own reader (a callback, a task) hands each broadcast body to
`put`; `async for` takes them in order. The backlog is bounded: a listener more than `BACKLOG`
bodies behind loses the oldest. A broadcast is a wake-up hint whose truth lives in the store, so a
reader that far behind must read the store anyway, while an unbounded backlog would let one stuck
reader eat the process (or, on Redis, get its connection dropped by the server's output limit).

`end()` stops the listener for good: its reader takes what is left, then sees the end of the
iteration, or the engine's error when the engine lost the listener. `close()` ends it at once,
dropping the backlog, and frees what the engine holds for it.
"""

from __future__ import annotations

import abc
import asyncio
from collections import deque

from wirelab.pubsub.broker import BrokerError

__all__ = ["BACKLOG", "QueueListener"]

BACKLOG = 10_000


class QueueListener(abc.ABC):
    def __init__(self) -> None:
        self._backlog: deque[bytes] = deque(maxlen=BACKLOG)  # a full deque drops its oldest
        self._arrived = asyncio.Event()
        self._ended = False
        self._error: BrokerError | None = None
        self._closed = False

    def put(self, body: bytes) -> None:
        if not self._ended:
            self._backlog.append(body)
            self._arrived.set()

    def end(self, error: BrokerError | None = None) -> None:
        """No more bodies: the reader finishes the backlog, then stops, or raises `error`."""
        if not self._ended:
            self._ended, self._error = True, error
            self._arrived.set()

    def __aiter__(self) -> QueueListener:
        return self

    async def __anext__(self) -> bytes:
        while not self._backlog and not self._ended:
            self._arrived.clear()
            await self._arrived.wait()
        if self._backlog:
            return self._backlog.popleft()
        if self._error is not None:
            raise self._error
        raise StopAsyncIteration

    async def close(self) -> None:
        """End the iteration now, then free the engine's queue, connection or task."""
        if self._closed:
            return
        self._closed = True
        self._backlog.clear()
        self._error = None  # closed by its owner: whatever the engine said no longer matters
        self.end()
        await self._release()

    @abc.abstractmethod
    async def _release(self) -> None:
        """Free what the engine holds for this listener; called once, by `close()`."""

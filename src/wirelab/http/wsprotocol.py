"""uvicorn's WebSocket protocol with one extension: write a ready-made frame now, if the socket can take it.

ASGI's `send` is a coroutine, so delivering one message to ten thousand sockets through it costs ten
thousand task switches. Over this extension (`scope["extensions"]["wirelab.write_frame"]`) a fan-out
writes an already-encoded frame straight to the transport, synchronously, and is told False when it
cannot (handshake not done, closing, or the write buffer over its high-water mark), so flow control
still holds and the caller falls back to the ordinary `send`.

It also keeps an idle connection smaller (measured with tracemalloc, per connection): the receive
queue and the writable flag are `_Inbox` and `_Flag` instead of an asyncio.Queue (three deques and an
Event, about 3.3 KiB) and an asyncio.Event (a deque, about 0.9 KiB); the parsed handshake request
and the prepared response are emptied once the handshake is answered (about 3.4 KiB of headers, which
the ASGI scope has anyway); and every connection shares one permessage-deflate offer.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["WRITE_FRAME", "PushWebSocketProtocol"]

WRITE_FRAME = "wirelab.write_frame"


class _Inbox:
    """What uvicorn needs of its receive queue (`put_nowait`, `get`, `empty`), in plain lists.

    An idle connection's app is always waiting in `get`, so there is one waiter and no item.
    """

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiters: list[asyncio.Future[None]] = []

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return

    async def get(self) -> Any:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif not waiter.cancelled() and self._items:
                    self._wake_next()  # we were woken for an item we will not take: pass it on
                raise
        return self._items.pop(0)

    def _wake_next(self) -> None:
        while self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                return


class _Flag:
    """What uvicorn needs of its `writable` asyncio.Event (`set`, `clear`, `is_set`, `wait`)."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        while not self._set:
            waiter = asyncio.get_running_loop().create_future()
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if self._waiters is not None and waiter in self._waiters:
                    self._waiters.remove(waiter)


_SHARED_EXTENSIONS: dict[Any, list[Any]] = {}
"""One list of extension factories per configuration (they hold settings, not per-connection state)."""


class PushWebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _Inbox()  # type: ignore[assignment]
        self.writable = _Flag()  # type: ignore[assignment]
        extensions = self.conn.available_extensions
        if extensions:
            self.conn.available_extensions = _SHARED_EXTENSIONS.setdefault(self.config, list(extensions))

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        # The parsed request stays alive in websockets' parser generator (a local of its
        # `parse`) for the connection's life; its headers are in the scope now, and neither
        # websockets nor uvicorn reads the request again once the handshake is answered.
        event.headers.clear()
        self.request = None  # type: ignore[assignment]
        if not self.close_sent:
            extensions: dict[str, Any] = self.scope["extensions"]
            extensions[WRITE_FRAME] = self.write_frame
        else:
            self.response = None  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        try:
            await super().send(message)
        finally:
            if self.handshake_complete:
                self.response = None  # type: ignore[assignment]  # sent or refused: only the handshake reads it

    def write_frame(self, frame: bytes) -> bool:
        """Write a complete, unmasked data frame; the protocol state is untouched by data frames."""
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or not self.writable.is_set()
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True

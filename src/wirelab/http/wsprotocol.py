"""uvicorn's WebSocket protocol with one extension: write a ready-made frame now, if the socket can take it.

ASGI's `send` is a coroutine, so delivering one message to ten thousand sockets through it costs ten
thousand task switches. Over this extension (`scope["extensions"]["wirelab.write_frame"]`) a fan-out
writes an already-encoded frame straight to the transport, synchronously, and is told False when it
cannot (handshake not done, closing, or the write buffer over its high-water mark), so flow control
still holds and the caller falls back to the ordinary `send`.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

__all__ = ["WRITE_FRAME", "PushWebSocketProtocol"]

WRITE_FRAME = "wirelab.write_frame"


class PushWebSocketProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if not self.close_sent:
            extensions: dict[str, Any] = self.scope["extensions"]
            extensions[WRITE_FRAME] = self.write_frame

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

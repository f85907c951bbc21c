"""Encode a server-to-client WebSocket text frame (RFC 6455 §5.2), once, for any number of sockets.

A server's frames are never masked (§5.1) and, without compression, a message's frame is the same bytes
for every connection. So a fan-out can encode a message once and write that one buffer to every
socket, which is what `websockets.broadcast()` does too.
"""

from __future__ import annotations

import struct

__all__ = ["encode_text_frame"]

_FIN_TEXT = 0x81


def encode_text_frame(text: str) -> bytes:
    payload = text.encode()
    length = len(payload)
    if length < 126:
        header = bytes((_FIN_TEXT, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", _FIN_TEXT, 126, length)
    else:
        header = struct.pack("!BBQ", _FIN_TEXT, 127, length)
    return header + payload

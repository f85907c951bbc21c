"""The requests the bench's lean clients open with: a GET, and a WebSocket handshake (RFC 6455 §4.1).

The fan-out bench holds ten thousand idle subscribers in one or two client processes, and a
general-purpose client costs more per connection than the server under test, which would make the
load generator the thing measured. So the subscribers write these few requests as bytes, and read the
answers with the lab's own sans-I/O parsers (`wirelab.proto.http1`, `wsframe`, `sse`).
"""

from __future__ import annotations

from wirelab.proto.http1 import Request, write

__all__ = ["http_get", "ws_handshake"]


def http_get(host: str, target: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    fields = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in (("Host", host), *headers))
    return write(Request(b"GET", target.encode("latin-1"), b"1.1", fields))


def ws_handshake(host: str, path: str, key: str) -> bytes:
    """The opening handshake (RFC 6455 §4.1); `key` is 16 random bytes, base64-encoded."""
    headers = (
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", key),
        ("Sec-WebSocket-Version", "13"),
    )
    return http_get(host, path, headers)

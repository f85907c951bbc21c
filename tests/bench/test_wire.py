"""The lean clients' opening requests."""

from __future__ import annotations

from wirelab.bench.wire import http_get, ws_handshake


def test_handshake_is_a_get_with_the_upgrade_headers() -> None:
    request = ws_handshake("127.0.0.1:1", "/ws", "a2V5")
    assert request.startswith(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:1\r\n")
    assert b"Upgrade: websocket\r\n" in request
    assert b"Sec-WebSocket-Key: a2V5\r\n" in request
    assert request.endswith(b"\r\n\r\n")


def test_http_get_has_the_host_and_extra_headers() -> None:
    request = http_get("h:1", "/x?a=1", (("Last-Event-ID", "7"),))
    assert request == b"GET /x?a=1 HTTP/1.1\r\nHost: h:1\r\nLast-Event-ID: 7\r\n\r\n"

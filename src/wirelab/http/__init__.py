"""HTTP serving: ASGI requests and responses, WebSockets, routing, and the server runner."""

from wirelab.http.asgi import (
    Receive,
    Request,
    Scope,
    Send,
    WebSocket,
    WebSocketClosed,
    send_json,
    send_problem,
)
from wirelab.http.router import Router

__all__ = [
    "Receive",
    "Request",
    "Router",
    "Scope",
    "Send",
    "WebSocket",
    "WebSocketClosed",
    "send_json",
    "send_problem",
]

"""The lab's HTTP stack, each piece usable on its own.

The service (`wirelab up`), on uvicorn:
    asgi         requests and responses as ASGI messages, WebSockets
    router       routes to handlers; errors to problem+json in one place
    guard        deadlines and caps on every connection (slow heads, stalled bodies, too many)
    serve        the uvicorn runner with a graceful stop; wsprotocol, its WebSocket extension
    idempotency  Idempotency-Key replay around a handler

Our own connections (the proxies use them), reading HTTP/1.1 with llhttp or with our own parser:
    llhttp       llhttp (through httptools) behind the interface of `wirelab.proto.http1`'s parsers,
                 with the same framing rules and limits; the default (`wirelab bench lb` shows both)
    h1server     HTTP/1.1 server connection: keep-alive, pipelining, read deadlines, refusals
    h2server     HTTP/2 server connection over TLS (ALPN) or h2c, on the `h2` library
    downstream   the interface both servers give a handler to answer one request
    h1client     HTTP/1.1 client: a keep-alive connection pool, one request's exchange
    h2client     HTTP/2 client: one multiplexed connection shared by every request
"""

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

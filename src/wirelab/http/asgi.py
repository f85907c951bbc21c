"""Thin wrappers over ASGI messages: read a request, send a response, talk over a WebSocket.

We speak raw ASGI rather than a framework so the lab shows every byte a transport costs, and so a
long-lived stream is one task and a few objects, not a stack of middleware.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, MutableMapping
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from wirelab.errors import (
    BadRequest,
    PayloadTooLarge,
    ProblemError,
    UnsupportedMediaType,
    WirelabError,
    problem_body,
)
from wirelab.http.wsprotocol import WRITE_FRAME
from wirelab.proto import strictjson

__all__ = [
    "ClientGone",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "WebSocket",
    "WebSocketClosed",
    "send_json",
    "send_problem",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_BODY_LIMIT = 64 * 1024
T = TypeVar("T")


class Request:
    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.method: str = scope.get("method", "GET")
        self.path: str = scope["path"]
        self.query = dict(
            parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        )
        self.headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self._body: bytes | None = None

    def int_param(self, name: str, *, default: int, minimum: int = 0) -> int:
        """An integer query parameter; a malformed one is the client's fault (400)."""
        return parse_int(self.query.get(name), name, default=default, minimum=minimum)

    def seconds_param(self, name: str, *, default: float, maximum: float) -> float:
        """A duration in seconds, capped by the server's `maximum`."""
        raw = self.query.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise BadRequest(f"{name} must be a number of seconds of at least 0, not {raw!r}")
        return min(value, maximum)

    async def stream(self, *, limit: int) -> AsyncIterator[bytes]:
        """The body chunk by chunk, never held whole; over `limit` bytes is a 413, before reading
        anything when Content-Length already says so. A client that hangs up raises ClientGone."""
        length = self.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
        received = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk: bytes = message.get("body", b"")
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(f"the body is over the {limit}-byte limit")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return

    async def body(self, *, limit: int = JSON_BODY_LIMIT) -> bytes:
        """The whole (small) body, read once and kept: a middleware may read it before a handler."""
        if self._body is None:
            self._body = b"".join([chunk async for chunk in self.stream(limit=limit)])
        return self._body

    async def json(self, *, limit: int = JSON_BODY_LIMIT) -> Any:
        """The body as JSON, bounded in size and depth (`strictjson`); a body declared as some other
        type is a 415; a body with no declared type is taken as JSON."""
        declared = self.headers.get("content-type")
        if declared is not None and not is_json_type(declared):
            raise UnsupportedMediaType(f"send the body as application/json, not {declared[:80]!r}")
        return strictjson.loads(await self.body(limit=limit))

    async def wait_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def unless_disconnected(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` until it ends or the client hangs up (ClientGone), whichever comes first.

        A stream or a long poll must notice a client that left, or its task and its place among
        the feed's followers would outlive the connection.
        """
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(self.wait_disconnect())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            task.cancel()
            gone.cancel()
            await asyncio.gather(task, gone, return_exceptions=True)
        if task.cancelled():
            raise ClientGone()
        return task.result()


class ClientGone(WirelabError):
    """The client hung up before we had read its request."""


def is_json_type(content_type: str) -> bool:
    """application/json, or any `+json` type (application/merge-patch+json, ...), parameters aside."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def parse_int(raw: str | None, name: str, *, default: int, minimum: int = 0) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18 or int(raw) < minimum:
        raise BadRequest(f"{name} must be a whole number of at least {minimum}, not {raw!r}")
    return int(raw)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    *,
    content_type: str,
    headers: Iterable[tuple[str, str]] = (),
) -> None:
    raw_headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        *((k.encode(), v.encode()) for k, v in headers),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(
    send: Send,
    status: int,
    payload: Any,
    *,
    headers: Iterable[tuple[str, str]] = (),
    raw: str | None = None,
) -> None:
    """Send JSON; pass `raw` when the document is already encoded (a feed entry's data)."""
    text = raw if raw is not None else json.dumps(payload, separators=(",", ":"))
    await send_bytes(send, status, text.encode(), content_type="application/json", headers=headers)


async def send_problem(send: Send, error: ProblemError, *, instance: str | None = None) -> None:
    body = json.dumps(problem_body(error, instance=instance)).encode()
    await send_bytes(
        send, error.status, body, content_type="application/problem+json", headers=error.headers.items()
    )


def _decline(frame: bytes) -> bool:
    return False


class WebSocketClosed(WirelabError):
    """The peer closed the WebSocket (or the server is closing it)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"WebSocket closed with code {code}")
        self.code = code


class WebSocket:
    __slots__ = ("_aborted", "_receive", "_receiver", "_send", "path", "scope")

    def __init__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.path: str = scope["path"]
        self._receiver: asyncio.Task[Any] | None = None
        self._aborted = False

    async def accept(self) -> None:
        message = await self._receive()
        if message["type"] != "websocket.connect":
            raise WebSocketClosed(1006)
        await self._send({"type": "websocket.accept"})

    async def receive(self) -> str | bytes:
        self._receiver = asyncio.current_task()
        try:
            message = await self._receive()
        except asyncio.CancelledError:
            if not self._aborted:
                raise
            self._receiver.uncancel()  # type: ignore[union-attr]
            raise WebSocketClosed(1008) from None
        finally:
            self._receiver = None
        if message["type"] == "websocket.disconnect":
            raise WebSocketClosed(message.get("code", 1005))
        text: str | None = message.get("text")
        if text is not None:
            return text
        data: bytes = message.get("bytes") or b""
        return data

    async def send(self, data: str | bytes) -> None:
        key = "text" if isinstance(data, str) else "bytes"
        await self._send_message({"type": "websocket.send", key: data})

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._send_message({"type": "websocket.close", "code": code, "reason": reason[:120]})

    def frame_writer(self) -> Callable[[bytes], bool]:
        """What writes a pre-encoded frame at once if the socket can take it, and says False when it
        cannot (or the server has no such extension). Looked up once and called per message, so a
        fan-out's loop touches the connection itself and nothing on the way to it."""
        write: Callable[[bytes], bool] | None = self.scope.get("extensions", {}).get(WRITE_FRAME)
        return write if write is not None else _decline

    def abort(self) -> None:
        """End the connection from outside its receive loop, even if its buffers are full.

        A close frame cannot pass a peer that stopped reading, so the receive loop is woken with
        WebSocketClosed instead; the handler returns and the server closes the transport.
        """
        self._aborted = True
        if self._receiver is not None:
            self._receiver.cancel()

    async def _send_message(self, message: Message) -> None:
        try:
            await self._send(message)
        except OSError:  # the server's way of saying the peer is gone
            raise WebSocketClosed(1006) from None

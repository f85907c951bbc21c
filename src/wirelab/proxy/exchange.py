"""The HTTP/1.1 pieces both of our proxies share: a client connection read through our strict parser,
the end-to-end view of a header list, the response head re-framed for the client, and a refusal.

The forward proxy (`forward.py`) and the layer 7 balancer (`l7.py`) differ in whom they act for, not
in how a message crosses them, so this is written once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from http import HTTPStatus

import h11

from wirelab.errors import WirelabError
from wirelab.proto.http1 import Data, Event, HTTPRequestError, Limits, Request, RequestParser

__all__ = [
    "PSEUDONYM",
    "RECV_BYTES",
    "ClientConnection",
    "GatewayError",
    "answer_requests",
    "end_to_end",
    "persistent",
    "problem_response",
    "response_head",
]

log = logging.getLogger(__name__)

RECV_BYTES = 64 << 10
_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
PSEUDONYM = b"wirelab"


class GatewayError(WirelabError):
    """The origin could not be reached or broke HTTP: 502, or 504 when it did not answer in time."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ClientConnection:
    """One client connection: its socket, its parser, and the events parsed but not yet handled."""

    def __init__(self, sock: socket.socket, limits: Limits, idle_timeout: float) -> None:
        self.sock = sock
        self.parser = RequestParser(limits=limits)
        self.answered = False
        self._idle_timeout = idle_timeout
        self._pending: deque[Event] = deque()

    async def next_event(self) -> Event | None:
        """The next event, reading as needed; None when the client closed between requests."""
        loop = asyncio.get_running_loop()
        while not self._pending:
            async with asyncio.timeout(self._idle_timeout):
                data = await loop.sock_recv(self.sock, RECV_BYTES)
            self._pending.extend(self.parser.receive_data(data))
            if not data and not self._pending:
                return None
        return self._pending.popleft()

    async def body(self) -> AsyncIterator[bytes]:
        """The current request's body, as it arrives (the parser raises if the client stops early)."""
        while isinstance(event := await self.next_event(), Data):
            yield event.data

    async def send(self, data: bytes) -> None:
        self.answered = True
        await asyncio.get_running_loop().sock_sendall(self.sock, data)


def response_head(
    request: Request, response: h11.Response, *, keep_alive: bool
) -> tuple[bytes, bool, bool]:
    """The head for the client, and whether its body is chunked and the connection closes after it."""
    fields = end_to_end(response.headers)
    has_body = request.method != b"HEAD" and response.status_code not in (204, 304)
    sized = any(name == b"content-length" for name, _ in fields)
    chunked = has_body and not sized and request.version == b"1.1"
    close = not keep_alive or (has_body and not sized and not chunked)
    fields.append((b"via", response.http_version + b" " + PSEUDONYM))
    if chunked:
        fields.append((b"transfer-encoding", b"chunked"))
    fields.append((b"connection", b"close" if close else b"keep-alive"))
    status = b"HTTP/1.1 %d %b\r\n" % (response.status_code, response.reason)
    return status + b"".join(n + b": " + v + b"\r\n" for n, v in fields) + b"\r\n", chunked, close


def end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The fields meant for the far end: minus hop-by-hop ones and those Connection names (§7.6.1)."""
    fields = list(headers)
    named = {
        token.strip(b" \t").lower()
        for name, value in fields
        if name == b"connection"
        for token in value.split(b",")
    }
    return [(name, value) for name, value in fields if name not in _HOP_BY_HOP and name not in named]


def problem_response(status: int, detail: str) -> bytes:
    """An RFC 9457 answer, then close: after a refused request the connection's framing is unknown."""
    phrase = HTTPStatus(status).phrase
    body = json.dumps({"type": "about:blank", "title": phrase, "status": status, "detail": detail}).encode()
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/problem+json\r\n"
        f"content-length: {len(body)}\r\nvia: 1.1 wirelab\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


async def answer_requests(
    client: ClientConnection,
    next_request: Callable[[], Awaitable[object]],
    exchange: Callable[[Request], Awaitable[bool]],
) -> None:
    """Answer one client connection's requests in turn while `exchange` says it may carry another.

    A refused request (ours: HTTPRequestError; the far end's: GatewayError) is answered with a
    problem document unless its answer had begun, and ends the connection: after a refusal its
    framing cannot be trusted. A connection that fails or times out just ends.
    """
    try:
        while isinstance(request := await next_request(), Request):
            client.answered = False
            if not await exchange(request):
                break
    except (HTTPRequestError, GatewayError) as error:
        log.info("refused: %s %s", error.status, error.detail)
        if not client.answered:
            with contextlib.suppress(OSError):
                await client.send(problem_response(error.status, error.detail))
    except (OSError, TimeoutError, h11.ProtocolError) as error:
        log.debug("connection ended: %r", error)


def persistent(request: Request) -> bool:
    """RFC 9112 §9.3, from this request's own fields: the parser's flag follows the latest request
    parsed, which is a later one when the client pipelines."""
    connection = request.tokens(b"connection")
    return b"keep-alive" in connection if request.version == b"1.0" else b"close" not in connection

"""One request's way back to its client, whatever HTTP version the client speaks: what the HTTP/1.1
and HTTP/2 servers (`h1server`, `h2server`) give a `Handler`.

The layer 7 balancer forwards each request to an HTTP/1.1 backend the same way whether it came on
an HTTP/1.1 connection (`wirelab.http.h1server`) or as one stream of an HTTP/2 connection
(`wirelab.http.h2server`); only how the request body is read and how the response is framed back
differ, and that is this interface. The request itself is a `wirelab.proto.http1.Request`: an
HTTP/2 stream's pseudo-fields become its method and target, `:authority` its `host` field, and its
version is b"2".
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol

from wirelab.proto.http1 import Request

__all__ = ["Downstream", "Handler"]


class Downstream(Protocol):
    """One request's way back to its client."""

    scheme: str
    """"http" or "https": what the client used, for X-Forwarded-Proto and Forwarded."""
    has_body: bool
    """Whether the request has a body to read (False once it is known to be empty)."""

    @property
    def answered(self) -> bool:
        """Whether a response head has gone out: after that a failure can only cut the response."""

    @property
    def trailers(self) -> Sequence[tuple[bytes, bytes]]:
        """The request's trailer fields, once its body has been read (none before, or if it sent none)."""

    def body(self) -> AsyncIterator[bytes]:
        """The request body as it arrives; raises if the client stops early."""

    async def respond(self, status: int, reason: bytes, headers: Sequence[tuple[bytes, bytes]]) -> None:
        """Start the response with the backend's status and fields as it sent them; the downstream
        drops what is hop-by-hop for its own version and frames the body itself."""

    async def send(self, data: bytes) -> None:
        """Part of the response body, unframed; it may wait for the client's flow control."""

    async def flush(self) -> None:
        """Write out what is buffered: called before waiting on the backend, so a Server-Sent Event
        reaches the client as soon as it came."""

    async def finish(self, trailers: Sequence[tuple[bytes, bytes]] = ()) -> bool:
        """End the response, with the far end's trailer fields if it sent some (relayed where the
        client's framing has room for them: a chunked HTTP/1.1 body, or any HTTP/2 stream); True if
        the client connection may carry another request."""


Handler = Callable[[Request, Downstream, str], Awaitable[bool]]
"""What serves one request: (request, its downstream, the client's address) -> keep the connection."""

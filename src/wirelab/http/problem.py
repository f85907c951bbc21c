"""Refusals written straight onto a connection, as RFC 9457 problem documents.

The servers that write HTTP themselves (the connection guard in front of uvicorn, our HTTP/1.1 and
HTTP/2 server connections) refuse before any handler runs, so they cannot use the router's
`send_problem`; they share these two functions instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from http import HTTPStatus

from wirelab.proto.http1 import Response, write

__all__ = ["problem_document", "problem_response"]


def problem_document(status: int, detail: str) -> bytes:
    """An RFC 9457 problem document: what every refusal carries, whatever the HTTP version."""
    phrase = HTTPStatus(status).phrase
    return json.dumps({"type": "about:blank", "title": phrase, "status": status, "detail": detail}).encode()


def problem_response(status: int, detail: str, *, headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 answer, after which the connection closes: after a refused request, the
    connection's framing is unknown."""
    body = problem_document(status, detail)
    fields = (
        (b"content-type", b"application/problem+json"),
        (b"content-length", b"%d" % len(body)),
        *headers,
        (b"connection", b"close"),
    )
    return write(Response(status, HTTPStatus(status).phrase.encode(), b"1.1", fields)) + body

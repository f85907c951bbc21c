"""Server-Sent Events over the feed: one long response per client, resumable with Last-Event-ID.

Each event's id is the feed version, so a browser's EventSource resumes by itself after a drop: it sends
the last id it saw as Last-Event-ID and we deliver exactly what follows. The stream ends after a final
event (a finished job); idle streams carry comment heartbeats so that proxies and clients can tell a
quiet stream from a dead one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from wirelab.errors import NotFound
from wirelab.feed import Entry, Feed, Lagged
from wirelab.http import Request
from wirelab.http.asgi import ClientGone, parse_int
from wirelab.proto.sse import encode_comment, encode_retry
from wirelab.push.frames import sse_frame

__all__ = ["serve_sse"]

log = logging.getLogger("wirelab.push")

DROP_TIMEOUT_S = 1.0


async def serve_sse(
    feed: Feed,
    request: Request,
    topic: str,
    *,
    retry_ms: int = 2000,
    heartbeat_s: float = 15.0,
    must_exist: bool = True,
) -> None:
    latest = await feed.latest(topic)
    if latest is None and must_exist:
        raise NotFound(f"no {topic} exists")
    after = _resume_point(request, latest)
    if latest is not None and latest.final and after >= latest.version:
        # Nothing can follow: 204 tells an EventSource to stop reconnecting (WHATWG HTML §9.2.3).
        await request.send({"type": "http.response.start", "status": 204, "headers": []})
        await request.send({"type": "http.response.body", "body": b""})
        return
    await request.send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no"),
            ],
        }
    )

    async def send(chunk: bytes) -> None:
        await request.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def deliver(entry: Entry) -> None:
        await send(sse_frame(entry))

    async def heartbeat() -> None:
        await send(encode_comment("heartbeat"))

    await send(encode_retry(retry_ms))
    try:
        await request.unless_disconnected(
            feed.follow(topic, after, deliver, idle=heartbeat_s, on_idle=heartbeat)
        )
    except ClientGone:
        return
    except Lagged as lag:
        await _end_stalled(request, lag)
        return
    await request.send({"type": "http.response.body", "body": b"", "more_body": False})


async def _end_stalled(request: Request, lag: Lagged) -> None:
    """End the stream of a client too far behind; EventSource reconnects with Last-Event-ID.

    If even the end of the stream cannot pass its full buffers, we give up on it and the server
    closes the connection (uvicorn logs that the response was left incomplete, which it was).
    """
    log.warning("dropping an SSE client of %s: %s", lag.topic, lag)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DROP_TIMEOUT_S):
            await request.send({"type": "http.response.body", "body": b"", "more_body": False})


def _resume_point(request: Request, latest: Entry | None) -> int:
    """Last-Event-ID (or ?after=) resumes; without either, the latest entry comes first."""
    header = request.headers.get("last-event-id")
    if header is not None and header.strip():
        return parse_int(header.strip(), "Last-Event-ID", default=0)
    if "after" in request.query:
        return request.int_param("after", default=0)
    return latest.version - 1 if latest is not None else 0

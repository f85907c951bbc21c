"""GET a topic's latest snapshot now (request/response, short polling) or once it changes (long polling).

Short polling needs nothing of its own on the server: it is the plain GET, repeated by the client.
Long polling is the same GET with `after`: the server holds the request open on the feed, without a
busy loop, until a version newer than `after` exists or `wait` seconds pass. It answers with the next
version after `after` (each entry's data is the whole snapshot at that version), so a long-polling
client sees every version in order, one request per notification, exactly as a push client does;
when the wait runs out it answers with the unchanged latest snapshot and the client asks again.
"""

from __future__ import annotations

from wirelab.errors import NotFound
from wirelab.feed import Entry, Feed
from wirelab.http import Request, send_json

__all__ = ["DEFAULT_WAIT_S", "MAX_WAIT_S", "serve_poll"]

DEFAULT_WAIT_S = 30.0
MAX_WAIT_S = 60.0


async def serve_poll(feed: Feed, request: Request, topic: str) -> None:
    if "after" not in request.query:
        await _send_entry(request, await _latest(feed, topic))
        return
    after = request.int_param("after", default=0)
    wait = request.seconds_param("wait", default=DEFAULT_WAIT_S, maximum=MAX_WAIT_S)
    await _latest(feed, topic)  # 404 at once for a topic that does not exist
    await _send_entry(request, await request.unless_disconnected(_next(feed, topic, after, wait)))


async def _next(feed: Feed, topic: str, after: int, wait: float) -> Entry | None:
    latest = await feed.wait(topic, after, wait)
    if latest is None or latest.version <= after:
        return latest
    return (await feed.read(topic, after, limit=1))[0]


async def _latest(feed: Feed, topic: str) -> Entry:
    entry = await feed.latest(topic)
    if entry is None:
        raise NotFound(f"no {topic} exists")
    return entry


async def _send_entry(request: Request, entry: Entry | None) -> None:
    if entry is None:
        raise NotFound(f"{request.path} has no state yet")
    await send_json(
        request.send,
        200,
        None,
        raw=entry.data_json,
        headers=[("cache-control", "no-store"), ("x-feed-version", str(entry.version))],
    )

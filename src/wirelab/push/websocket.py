"""WebSocket push over the feed: one socket, any number of topic subscriptions, each resumable.

A subscription follows the feed from its `after` without a task of its own while caught up: new
entries are written to the socket as they are published, and a task runs only to catch up (see
`Feed.subscribe`); unsubscribing cancels it. A bad message gets an error message back and the
socket stays open. A subscriber that falls too far behind is told where to resume and dropped, so
a stalled client cannot hold server memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from wirelab.errors import ProblemError, problem_body
from wirelab.feed import Entry, Feed, Lagged, Subscription
from wirelab.http import WebSocket, WebSocketClosed
from wirelab.proto.pushwire import Subscribe, parse_client_message
from wirelab.push.frames import ws_frame, ws_message
from wirelab.push.sse import DROP_TIMEOUT_S, log

__all__ = ["TopicCheck", "serve_echo", "serve_push"]

TopicCheck = Callable[[str], Awaitable[None]]
"""Raises a ProblemError (NotFound) for a topic a client may not subscribe to."""

CLOSE_TOO_SLOW = 1008


async def serve_push(feed: Feed, ws: WebSocket, check_topic: TopicCheck) -> None:
    await ws.accept()
    subscriptions: dict[str, Subscription] = {}
    try:
        while True:
            raw = await ws.receive()
            try:
                message = parse_client_message(raw)
                _stop(subscriptions, message.topic)
                if isinstance(message, Subscribe):
                    await check_topic(message.topic)
                    subscriptions[message.topic] = await _subscribe(feed, ws, message, subscriptions)
            except ProblemError as error:
                await ws.send(json.dumps({"error": problem_body(error)}))
    except WebSocketClosed:
        pass
    finally:
        for subscription in subscriptions.values():
            subscription.cancel()


def _stop(subscriptions: dict[str, Subscription], topic: str) -> None:
    subscription = subscriptions.pop(topic, None)
    if subscription is not None:
        subscription.cancel()


async def _subscribe(
    feed: Feed, ws: WebSocket, message: Subscribe, subscriptions: dict[str, Subscription]
) -> Subscription:
    after = message.after
    if after is None:
        latest = await feed.latest(message.topic)
        after = latest.version - 1 if latest is not None else 0

    async def deliver(entry: Entry) -> None:
        await ws.send(ws_message(entry))

    write = ws.frame_writer()

    def push(entry: Entry) -> bool:
        return write(ws_frame(entry))

    async def on_end(reason: BaseException | None) -> None:
        if subscriptions.get(message.topic) is subscription:
            del subscriptions[message.topic]
        if isinstance(reason, Lagged):
            await _drop(ws, reason)
        elif reason is not None and not isinstance(reason, WebSocketClosed):
            raise reason

    subscription = await feed.subscribe(message.topic, after, deliver, push=push, on_end=on_end)
    return subscription


async def _drop(ws: WebSocket, lag: Lagged) -> None:
    """Say where to resume and close; if even that cannot pass the full buffers, just hang up.

    Either way the client resumes from the last version it received.
    """
    log.warning("dropping a WebSocket subscriber of %s: %s", lag.topic, lag)
    notice = json.dumps({"topic": lag.topic, "lagged": True, "resume_after": lag.cursor})
    try:
        async with asyncio.timeout(DROP_TIMEOUT_S):
            await ws.send(notice)
            await ws.close(CLOSE_TOO_SLOW, f"too slow: resume {lag.topic} after {lag.cursor}")
    except TimeoutError:
        ws.abort()
    except WebSocketClosed:
        pass


async def serve_echo(ws: WebSocket) -> None:
    """Send every message back as it came, text as text and binary as binary."""
    await ws.accept()
    try:
        while True:
            await ws.send(await ws.receive())
    except WebSocketClosed:
        pass

"""The WebSocket push protocol's messages: what a client may send, what the server sends back.

Client → server, JSON text:
    {"op": "subscribe", "topic": "jobs/ID", "after": 12}     after is optional
    {"op": "unsubscribe", "topic": "jobs/ID"}
Server → client:
    {"topic": ..., "version": ..., "event": ..., "data": {...}}      one feed entry
    {"error": {problem document}}                                   the socket stays open
    {"topic": ..., "lagged": true, "resume_after": N}                 sent before a slow client is dropped

Pure: the server adapter and our Python client both use it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from wirelab.errors import BadRequest
from wirelab.proto import strictjson

__all__ = [
    "Subscribe",
    "Unsubscribe",
    "encode_entry",
    "encode_subscribe",
    "parse_client_message",
]

MAX_TOPIC = 200


@dataclass(frozen=True, slots=True)
class Subscribe:
    topic: str
    after: int | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    topic: str


def parse_client_message(text: str | bytes) -> Subscribe | Unsubscribe:
    """Validate one client message; BadRequest says exactly what is wrong with it."""
    if isinstance(text, bytes):
        raise BadRequest("send JSON text frames, not binary")
    message = strictjson.loads(text)
    if not isinstance(message, dict):
        raise BadRequest("a message is a JSON object")
    op, topic = message.get("op"), message.get("topic")
    if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC:
        raise BadRequest(f"topic must be a non-empty string of at most {MAX_TOPIC} characters")
    if op == "subscribe":
        after = message.get("after")
        if after is not None and (type(after) is not int or after < 0):
            raise BadRequest("after must be a whole number of at least 0")
        return Subscribe(topic, after)
    if op == "unsubscribe":
        return Unsubscribe(topic)
    raise BadRequest(f"op must be 'subscribe' or 'unsubscribe', not {op!r}")


def encode_entry(topic: str, version: int, event: str, data_json: str) -> str:
    """One feed entry as a server message; `data_json` is spliced in already encoded."""
    return (
        f'{{"topic":{json.dumps(topic)},"version":{version},'
        f'"event":{json.dumps(event)},"data":{data_json}}}'
    )


def encode_subscribe(topic: str, after: int | None = None) -> str:
    message: dict[str, Any] = {"op": "subscribe", "topic": topic}
    if after is not None:
        message["after"] = after
    return json.dumps(message)

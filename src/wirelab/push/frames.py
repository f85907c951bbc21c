"""A feed entry encoded for each push transport, once per entry however many clients receive it."""

from __future__ import annotations

from functools import lru_cache

from wirelab.feed import Entry
from wirelab.proto.pushwire import encode_entry
from wirelab.proto.sse import encode_event
from wirelab.proto.wsframe import encode_text_frame

__all__ = ["sse_frame", "ws_frame", "ws_message"]


@lru_cache(maxsize=4096)
def sse_frame(entry: Entry) -> bytes:
    return encode_event(entry.data_json, event=entry.event, id=str(entry.version))


@lru_cache(maxsize=4096)
def ws_message(entry: Entry) -> str:
    return encode_entry(entry.topic, entry.version, entry.event, entry.data_json)


@lru_cache(maxsize=4096)
def ws_frame(entry: Entry) -> bytes:
    """The whole WebSocket frame, identical for every uncompressed connection."""
    return encode_text_frame(ws_message(entry))

"""Pick a transport's client by the name `wirelab watch --via` uses."""

from __future__ import annotations

from wirelab.clients.base import Follower
from wirelab.clients.poll import GetFollower, LongPollFollower, ShortPollFollower
from wirelab.clients.sse import SSEFollower
from wirelab.clients.ws import WebSocketFollower

__all__ = ["TRANSPORTS", "follower_for"]

TRANSPORTS = ("get", "short", "long", "sse", "ws")


def follower_for(via: str, base_url: str, *, interval: float = 1.0, wait: float = 30.0) -> Follower:
    """The client for a transport name, as `wirelab watch --via` spells it."""
    if via == "get":
        return GetFollower(base_url)
    if via == "short":
        return ShortPollFollower(base_url, interval=interval)
    if via == "long":
        return LongPollFollower(base_url, wait=wait)
    if via == "sse":
        return SSEFollower(base_url)
    if via == "ws":
        return WebSocketFollower(base_url)
    raise ValueError(f"unknown transport {via!r}; choose from {', '.join(TRANSPORTS)}")

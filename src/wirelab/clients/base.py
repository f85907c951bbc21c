"""What every transport's client yields: the same updates, in the same order, whatever the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["TERMINAL_EVENTS", "Follower", "ResumingFollower", "Update", "update_from_snapshot"]

TERMINAL_EVENTS = frozenset({"done", "failed", "canceled"})


@dataclass(frozen=True, slots=True)
class Update:
    version: int
    event: str
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.event in TERMINAL_EVENTS


def update_from_snapshot(raw: bytes | str) -> Update:
    """A job snapshot carries its own version and state; polling sees only snapshots."""
    data = json.loads(raw)
    state = data["state"]
    return Update(data["version"], state if state in TERMINAL_EVENTS else "progress", data)


class Follower(Protocol):
    """Follows one topic from a version; `requests` counts HTTP requests or WebSocket handshakes."""

    requests: int

    def follow(self, topic: str, *, after: int | None = None) -> AsyncIterator[Update]: ...

    async def aclose(self) -> None: ...


class ResumingFollower:
    """A follower over one long-lived connection that, when it drops, reconnects from the last version.

    That is what makes push transports as reliable as polling: the server keeps every version, the
    client remembers the last one it saw, so a drop costs a reconnect and nothing else.
    """

    drops: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, *, max_reconnects: int, retry_s: float) -> None:
        self.requests = 0
        self.reconnects = 0
        self.retry_s = retry_s
        self._max_reconnects = max_reconnects

    async def follow(self, topic: str, *, after: int | None = None) -> AsyncIterator[Update]:
        while True:
            try:
                async for update in self._connect(topic, after):
                    after = update.version
                    yield update
                    if update.final:
                        return
            except self.drops:
                pass
            if self.reconnects >= self._max_reconnects:
                raise ConnectionError(f"the connection following {topic} kept dropping; gave up")
            self.reconnects += 1
            await asyncio.sleep(self.retry_s)

    def _connect(self, topic: str, after: int | None) -> AsyncIterator[Update]:
        """One connection's updates after `after` (None: the latest first)."""
        raise NotImplementedError

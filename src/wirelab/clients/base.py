"""What every transport's client yields: the same updates, in the same order, whatever the wire."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["TERMINAL_EVENTS", "Follower", "Update", "update_from_snapshot"]

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

"""What a feed needs from durable storage; the stores family implements it."""

from __future__ import annotations

from typing import Protocol

from wirelab.feed.log import Entry

__all__ = ["EventStore"]


class EventStore(Protocol):
    async def append(self, entry: Entry) -> None:
        """Make `entry` durable; it is the next version of its topic."""

    async def read(self, topic: str, after: int, limit: int) -> list[Entry]:
        """Entries of `topic` newer than `after`, oldest first."""

    async def latest(self, topic: str) -> Entry | None:
        """The newest entry of `topic`, or None for a topic never written."""

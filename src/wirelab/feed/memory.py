"""An event store that lives in memory: for topics that need no durability, and for unit tests."""

from __future__ import annotations

from collections import defaultdict

from wirelab.feed.log import Entry
from wirelab.feed.store import VersionConflict
from wirelab.proto.idempotency import Completion

__all__ = ["MemoryEventStore"]


class MemoryEventStore:
    def __init__(self) -> None:
        self._topics: dict[str, list[Entry]] = defaultdict(list)

    async def append(self, entry: Entry, *, completes: Completion | None = None) -> None:
        """`completes` is accepted and dropped: nothing here outlives the process anyway."""
        entries = self._topics[entry.topic]
        if entry.version <= len(entries):
            raise VersionConflict(entry.topic, entry.version)
        if entry.version != len(entries) + 1:
            raise ValueError(f"expected version {len(entries) + 1} of {entry.topic!r}")
        entries.append(entry)

    async def read(self, topic: str, after: int, limit: int) -> list[Entry]:
        return self._topics.get(topic, [])[after : after + limit]

    async def latest(self, topic: str) -> Entry | None:
        entries = self._topics.get(topic)
        return entries[-1] if entries else None

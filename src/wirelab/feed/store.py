"""What a feed needs from durable storage; the stores family implements it."""

from __future__ import annotations

from typing import Protocol

from wirelab.errors import WirelabError
from wirelab.feed.log import Entry
from wirelab.proto.idempotency import Completion

__all__ = ["EventStore", "VersionConflict"]


class VersionConflict(WirelabError):
    """Another writer (another instance sharing the store) took this version of the topic first."""

    def __init__(self, topic: str, version: int) -> None:
        super().__init__(f"version {version} of {topic} exists already")
        self.topic = topic
        self.version = version


class EventStore(Protocol):
    async def append(self, entry: Entry, *, completes: Completion | None = None) -> None:
        """Make `entry` durable as the next version of its topic, with `completes` (an idempotent
        request's answer) in the same transaction; VersionConflict if the version is taken."""

    async def read(self, topic: str, after: int, limit: int) -> list[Entry]:
        """Entries of `topic` newer than `after`, oldest first."""

    async def latest(self, topic: str) -> Entry | None:
        """The newest entry of `topic`, or None for a topic never written."""

"""The pure part of a feed: one topic's versioned, append-only log with bounded retention.

Theory of operation: versions start at 1 and grow by one per event, so a reader's position is a single
integer, `after`. Only the newest `retention` entries stay in memory; a reader asking for older ones is
told so (`Trimmed`) and must read them from the durable store. A topic may be closed by a final entry
(a job that is done); nothing can follow it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from wirelab.errors import WirelabError

__all__ = ["Entry", "TopicClosed", "TopicLog", "Trimmed"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One event of a topic. `data_json` is encoded once so that fan-out never re-encodes it."""

    topic: str
    version: int
    event: str
    data_json: str
    published_at: float
    final: bool = False


class Trimmed(WirelabError):
    """The entries asked for have left memory; read them from the store."""


class TopicClosed(WirelabError):
    """The topic ended with a final entry; nothing may be appended."""


class TopicLog:
    def __init__(self, topic: str, *, retention: int, last: Entry | None = None) -> None:
        if retention < 1:
            raise ValueError("retention must be at least 1")
        self.topic = topic
        self._entries: deque[Entry] = deque(maxlen=retention)
        self.head = 0
        if last is not None:
            self._entries.append(last)
            self.head = last.version

    @property
    def closed(self) -> bool:
        return bool(self._entries) and self._entries[-1].final

    def latest(self) -> Entry | None:
        return self._entries[-1] if self._entries else None

    def next_version(self) -> int:
        return self.head + 1

    def append(self, entry: Entry) -> None:
        """Add the next entry; the caller made it durable first, so memory never runs ahead."""
        if self.closed:
            raise TopicClosed(f"topic {self.topic!r} is closed")
        if entry.topic != self.topic or entry.version != self.head + 1:
            raise ValueError(f"expected version {self.head + 1} of {self.topic!r}")
        self._entries.append(entry)
        self.head = entry.version

    def after(self, version: int, *, limit: int) -> list[Entry]:
        """Entries newer than `version`, oldest first, at most `limit` of them."""
        if version >= self.head:
            return []
        oldest = self._entries[0].version if self._entries else self.head + 1
        if version + 1 < oldest:
            raise Trimmed(f"{self.topic}: entries after {version} start before {oldest}")
        start = version + 1 - oldest
        return [self._entries[i] for i in range(start, min(start + limit, len(self._entries)))]

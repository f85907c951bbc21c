"""The versioned topic log that every transport adapts: publish, read, wait, follow."""

from wirelab.feed.feed import Change, Completes, Deliver, Feed, Lagged
from wirelab.feed.log import Entry, TopicClosed, TopicLog, Trimmed
from wirelab.feed.memory import MemoryEventStore
from wirelab.feed.store import EventStore

__all__ = [
    "Change",
    "Completes",
    "Deliver",
    "Entry",
    "EventStore",
    "Feed",
    "Lagged",
    "MemoryEventStore",
    "TopicClosed",
    "TopicLog",
    "Trimmed",
]

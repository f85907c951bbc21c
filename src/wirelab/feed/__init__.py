"""The versioned topic log that every transport adapts: publish, read, wait, follow."""

from wirelab.feed.feed import Change, Completes, Deliver, Ended, Feed, Lagged, Subscription
from wirelab.feed.log import Entry, TopicClosed, TopicLog, Trimmed
from wirelab.feed.memory import MemoryEventStore
from wirelab.feed.store import EventStore

__all__ = [
    "Change",
    "Completes",
    "Deliver",
    "Ended",
    "Entry",
    "EventStore",
    "Feed",
    "Lagged",
    "MemoryEventStore",
    "Subscription",
    "TopicClosed",
    "TopicLog",
    "Trimmed",
]

"""The broker contract: one small interface, two delivery styles, the same on every engine.

    publish(topic, body)          durable once it returns (publisher confirms, fsync'd log, ...)
    declare(service, topics)      the service's durable queue, bound to its topics
    subscribe(service, topics)    one queue per service: every service gets its own copy of a
                                  message (fan-out, pub/sub); the consumers of one service share
                                  that copy's queue (competing consumers, a work queue)
    Delivery.ack()                done with it
    Delivery.nack(reason)         failed: redelivered with attempts + 1, or dead-lettered with the
                                  reason once `max_attempts` is reached (or at once: retry=False)
    consumer gone without acking  every unacknowledged message is redelivered (at-least-once)
    broadcast(channel, body)      a wake-up to every listener of `channel` connected now, in every
                                  process sharing the namespace: at most once, stored nowhere
    listen(channel)               a Listener that hears every broadcast made after it returns:
                                  `async for body in listener`, until `await listener.close()`
    listener lost                 its iteration raises BrokerError (a dropped connection): what
                                  was broadcast meanwhile is gone, so read the store, listen again

Topics and channels are exact names such as `image.uploaded` (no wildcards, so every engine can
route them the same way). Bodies are bytes; what they mean is the publisher's business (see
proto/pipeline).

Messages are facts and broadcasts are hints. When an API instance writes a feed version, the store
holds it; a broadcast only tells the other instances to look now rather than at their next poll.
So a broadcast is never stored: a listener that comes later, or was disconnected meanwhile, misses
it and reads the store instead; a listener more than 10,000 behind loses the oldest (see
listener.py); and broadcasts skip everything that makes messages durable, for speed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from wirelab.errors import WirelabError

__all__ = [
    "Broker",
    "BrokerError",
    "DeadLetter",
    "Delivery",
    "Listener",
    "Message",
    "Subscription",
]


class BrokerError(WirelabError):
    """The broker refused or lost an operation (connection down, publish not confirmed)."""


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    body: bytes
    id: str
    attempts: int = 1
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that a service gave up on, with why."""

    service: str
    message: Message
    reason: str


class Delivery(Protocol):
    @property
    def message(self) -> Message: ...

    async def ack(self) -> None: ...

    async def nack(self, reason: str, *, retry: bool = True) -> None:
        """Redeliver (attempts + 1), or dead-letter with `reason` after the last attempt.

        `retry=False` dead-letters at once: for a message that can never succeed (malformed),
        another attempt would only waste one."""


class Subscription(Protocol):
    def __aiter__(self) -> AsyncIterator[Delivery]: ...

    async def close(self) -> None:
        """Stop consuming; unacknowledged deliveries go back to the queue."""


class Listener(Protocol):
    def __aiter__(self) -> AsyncIterator[bytes]:
        """Each broadcast body in order; BrokerError if the engine lost the listener."""

    async def close(self) -> None:
        """Stop listening: the iteration ends, and the engine frees the listener's queue or
        connection."""


class Broker(Protocol):
    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topic: str, body: bytes, *, headers: Mapping[str, str] | None = None) -> str:
        """Publish durably; returns the message id."""

    async def declare(self, service: str, topics: Sequence[str]) -> None:
        """Create `service`'s durable queue bound to `topics` (idempotent), so that messages
        published before its first consumer starts wait for it instead of being dropped."""

    async def subscribe(
        self, service: str, topics: Sequence[str], *, prefetch: int = 16, max_attempts: int = 5
    ) -> Subscription:
        """Declare, then consume `service`'s queue with at most `prefetch` unacknowledged."""

    async def dead_letters(self, service: str) -> list[DeadLetter]: ...

    async def replay(self, service: str) -> int:
        """Move every dead letter of `service` back to its queue with fresh attempts; how many."""

    async def broadcast(self, channel: str, body: bytes) -> None:
        """Hand `body` to every listener of `channel` connected now, at most once; store nothing."""

    async def listen(self, channel: str) -> Listener:
        """A listener of `channel`, connected when this returns, so that no later broadcast
        is missed between subscribing and reading the store."""

    async def destroy(self) -> None:
        """Delete every exchange, queue and stream of this broker's namespace (tests, benches)."""

"""The embedded broker: in-process queues with the full contract (fan-out, competing consumers,
prefetch, ack/nack, redelivery, dead letters). Nothing to install; nothing survives the process.

Theory of operation: each service has one queue of ready messages. A subscription (one consumer)
takes from it while it holds fewer than `prefetch` unacknowledged messages, and sleeps on its own
future otherwise; publishing or acknowledging wakes one sleeping consumer that can take more. Closing
a subscription, including when its task is cancelled, puts its unacknowledged messages back at the
front with one more attempt, which is what "a consumer died" means in-process.

A broadcast puts its body straight into the backlog of each listener of its channel (see
listener.py), so a listener registered when `listen()` returns hears every later one; one process
is the whole namespace here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import secrets
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence

from wirelab.pubsub.broker import BrokerError, DeadLetter, Message
from wirelab.pubsub.listener import QueueListener

__all__ = ["MemoryBroker", "MemoryListener"]


class _Queue:
    def __init__(self, service: str) -> None:
        self.service = service
        self.ready: deque[Message] = deque()
        self.dead: list[DeadLetter] = []
        self.consumers: list[MemorySubscription] = []

    def put(self, message: Message, *, front: bool = False) -> None:
        if front:
            self.ready.appendleft(message)
        else:
            self.ready.append(message)
        self.wake_one()

    def wake_one(self) -> None:
        for consumer in self.consumers:
            if consumer.wake():
                return


class MemoryDelivery:
    __slots__ = ("_settled", "_subscription", "_tag", "message")

    def __init__(self, subscription: MemorySubscription, tag: int, message: Message) -> None:
        self._subscription = subscription
        self._tag = tag
        self._settled = False
        self.message = message

    async def ack(self) -> None:
        self._settle()
        self._subscription.settle(self._tag, None)

    async def nack(self, reason: str, *, retry: bool = True) -> None:
        self._settle()
        self._subscription.settle(self._tag, reason, retry=retry)

    def _settle(self) -> None:
        if self._settled:
            raise BrokerError(f"message {self.message.id} was already acknowledged or rejected")
        self._settled = True


class MemorySubscription:
    def __init__(self, queue: _Queue, *, prefetch: int, max_attempts: int) -> None:
        if prefetch < 1 or max_attempts < 1:
            raise ValueError("prefetch and max_attempts must be at least 1")
        self._queue = queue
        self._prefetch = prefetch
        self._max_attempts = max_attempts
        self._unacked: dict[int, Message] = {}
        self._tags = itertools.count()
        self._wakeup: asyncio.Future[None] | None = None
        self._closed = False
        queue.consumers.append(self)

    def __aiter__(self) -> MemorySubscription:
        return self

    async def __anext__(self) -> MemoryDelivery:
        while not self._closed:
            if len(self._unacked) < self._prefetch and self._queue.ready:
                message = self._queue.ready.popleft()
                tag = next(self._tags)
                self._unacked[tag] = message
                return MemoryDelivery(self, tag, message)
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                await self._wakeup
            finally:
                self._wakeup = None
        raise StopAsyncIteration

    def wake(self) -> bool:
        """Wake this consumer if it sleeps and could take a message; True if it was woken."""
        if self._wakeup is None or self._wakeup.done() or len(self._unacked) >= self._prefetch:
            return False
        self._wakeup.set_result(None)
        return True

    def settle(self, tag: int, reason: str | None, *, retry: bool = True) -> None:
        message = self._unacked.pop(tag, None)
        if message is None:
            return  # the subscription closed meanwhile and already put it back
        if reason is not None:
            self._retry(message, reason, retry)
        self._queue.wake_one()

    def _retry(self, message: Message, reason: str, retry: bool) -> None:
        if not retry or message.attempts >= self._max_attempts:
            self._queue.dead.append(DeadLetter(self._queue.service, message, reason))
        else:
            self._queue.put(dataclasses.replace(message, attempts=message.attempts + 1))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.consumers.remove(self)
        for message in reversed(list(self._unacked.values())):
            self._queue.put(dataclasses.replace(message, attempts=message.attempts + 1), front=True)
        self._unacked.clear()
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)


class MemoryListener(QueueListener):
    """Registered under its channel until closed."""

    def __init__(self, listeners: dict[str, set[MemoryListener]], channel: str) -> None:
        super().__init__()
        self._listeners = listeners
        self._channel = channel
        listeners.setdefault(channel, set()).add(self)

    async def _release(self) -> None:
        others = self._listeners.get(self._channel, set())
        others.discard(self)
        if not others:  # channels come and go (one per job, say): keep no empty entries
            self._listeners.pop(self._channel, None)


class MemoryBroker:
    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._listeners: dict[str, set[MemoryListener]] = {}
        self._bindings: dict[str, list[_Queue]] = defaultdict(list)
        self._prefix = secrets.token_hex(4)
        self._ids = itertools.count(1)

    async def connect(self) -> None:
        pass

    async def close(self) -> None:
        for queue in self._queues.values():
            for consumer in list(queue.consumers):
                await consumer.close()
        for listener in [each for same in self._listeners.values() for each in same]:
            await listener.close()

    async def publish(self, topic: str, body: bytes, *, headers: Mapping[str, str] | None = None) -> str:
        message = Message(topic, body, f"{self._prefix}-{next(self._ids)}", 1, dict(headers or {}))
        for queue in self._bindings.get(topic, ()):
            queue.put(message)
        return message.id

    async def declare(self, service: str, topics: Sequence[str]) -> None:
        queue = self._queues.get(service)
        if queue is None:
            queue = self._queues[service] = _Queue(service)
        for topic in topics:
            if queue not in self._bindings[topic]:
                self._bindings[topic].append(queue)

    async def subscribe(
        self, service: str, topics: Sequence[str], *, prefetch: int = 16, max_attempts: int = 5
    ) -> MemorySubscription:
        await self.declare(service, topics)
        return MemorySubscription(self._queues[service], prefetch=prefetch, max_attempts=max_attempts)

    async def dead_letters(self, service: str) -> list[DeadLetter]:
        queue = self._queues.get(service)
        return list(queue.dead) if queue else []

    async def replay(self, service: str) -> int:
        queue = self._queues.get(service)
        if queue is None:
            return 0
        dead, queue.dead = queue.dead, []
        for letter in dead:
            queue.put(dataclasses.replace(letter.message, attempts=1))
        return len(dead)

    async def broadcast(self, channel: str, body: bytes) -> None:
        for listener in self._listeners.get(channel, ()):
            listener.put(body)

    async def listen(self, channel: str) -> MemoryListener:
        return MemoryListener(self._listeners, channel)

    async def destroy(self) -> None:
        await self.close()
        self._queues.clear()
        self._bindings.clear()

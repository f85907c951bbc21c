"""Subscriptions: `follow`'s guarantees (order, resume, Lagged, close) with no task while caught up."""

from __future__ import annotations

import asyncio

import pytest

from wirelab.feed import Entry, Feed, Lagged, MemoryEventStore, Subscription


def _data(version: int) -> dict[str, int]:
    return {"version": version}


async def _publish(feed: Feed, count: int, *, final_last: bool = False) -> None:
    for i in range(count):
        await feed.publish("t", "progress", _data, final=final_last and i == count - 1)


async def _settle() -> None:
    """Let every ready task run its course (a catch-up is a few steps; none of them sleeps)."""
    for _ in range(10):
        await asyncio.sleep(0)


class _Client:
    """A subscriber that records what reached it and how: pushed, delivered, or the end."""

    def __init__(self) -> None:
        self.pushed: list[int] = []
        self.delivered: list[int] = []
        self.ended: list[BaseException | None] = []
        self.accept = True
        self.stuck: asyncio.Event | None = None

    def stop_reading(self) -> None:
        """Like a client whose socket buffers are full: every push declined, every send blocked."""
        self.accept = False
        self.stuck = asyncio.Event()

    def push(self, entry: Entry) -> bool:
        if self.accept:
            self.pushed.append(entry.version)
        return self.accept

    async def deliver(self, entry: Entry) -> None:
        self.delivered.append(entry.version)
        if self.stuck is not None:
            await self.stuck.wait()  # a client that stopped reading

    async def on_end(self, subscription: Subscription, reason: BaseException | None) -> None:
        assert subscription.topic == "t"
        self.ended.append(reason)

    async def subscribe(self, feed: Feed, after: int) -> Subscription:
        return await feed.subscribe("t", after, self.deliver, push=self.push, on_end=self.on_end)


class _SlowStore(MemoryEventStore):
    """A store whose reads take a turn of the event loop, as a real database's do."""

    async def read(self, topic: str, after: int, limit: int) -> list[Entry]:
        await asyncio.sleep(0)
        return await super().read(topic, after, limit)


async def test_a_caught_up_subscription_is_pushed_to_and_has_no_task() -> None:
    feed = Feed(MemoryEventStore())
    await _publish(feed, 2)
    client = _Client()
    subscription = await client.subscribe(feed, 0)
    await _settle()
    assert client.delivered == [1, 2] and subscription.task is None
    await _publish(feed, 3)
    assert client.pushed == [3, 4, 5] and subscription.task is None
    assert feed.statistics()["followers"] == 1


async def test_a_declined_push_is_pulled_by_a_task_that_ends_once_caught_up() -> None:
    feed = Feed(MemoryEventStore())
    client = _Client()
    subscription = await client.subscribe(feed, 0)
    await _settle()
    client.accept = False  # the socket is busy
    await _publish(feed, 2)
    assert subscription.task is not None
    await _settle()
    assert client.delivered == [1, 2] and subscription.task is None
    client.accept = True
    await _publish(feed, 1)
    assert client.pushed == [3] and client.ended == []


async def test_entries_published_while_it_catches_up_from_the_store_come_once_in_order() -> None:
    """Reads from the store take turns of the event loop, and publishing goes on meanwhile."""
    feed = Feed(_SlowStore(), retention=2)
    await _publish(feed, 4)
    client = _Client()
    await client.subscribe(feed, 0)
    await _publish(feed, 3)
    await _settle()
    await _publish(feed, 1)
    assert client.delivered + client.pushed == [1, 2, 3, 4, 5, 6, 7, 8]


async def test_the_final_entry_is_delivered_then_it_ends_and_leaves() -> None:
    feed = Feed(MemoryEventStore())
    client = _Client()
    await client.subscribe(feed, 0)
    await _settle()
    await _publish(feed, 3, final_last=True)
    await _settle()
    assert client.pushed == [1, 2] and client.delivered == [3] and client.ended == [None]
    assert feed.statistics() == {"topics": 0, "waiters": 0, "followers": 0}


async def test_subscribing_from_the_final_version_ends_at_once() -> None:
    feed = Feed(MemoryEventStore())
    await _publish(feed, 2, final_last=True)
    client = _Client()
    await client.subscribe(feed, 2)
    await _settle()
    assert client.delivered == [] and client.ended == [None]


async def test_a_subscription_too_far_behind_ends_with_its_resume_point() -> None:
    feed = Feed(MemoryEventStore(), max_lag=3)
    client = _Client()
    client.stop_reading()
    await client.subscribe(feed, 0)
    await _publish(feed, 5)
    await _settle()
    [reason] = client.ended
    assert isinstance(reason, Lagged) and reason.cursor == 0 and client.delivered == [1]
    assert feed.statistics()["followers"] == 0


async def test_cancel_stops_it_without_on_end_even_mid_delivery() -> None:
    feed = Feed(MemoryEventStore())
    client = _Client()
    client.stop_reading()
    subscription = await client.subscribe(feed, 0)
    await _publish(feed, 2)
    await _settle()
    assert client.delivered == [1]
    subscription.cancel()
    await _settle()
    assert subscription.task is not None and subscription.task.cancelled()
    assert client.ended == [] and feed.statistics()["followers"] == 0


async def test_closing_the_feed_ends_every_subscription() -> None:
    feed = Feed(MemoryEventStore())
    client = _Client()
    await client.subscribe(feed, 0)
    await _settle()
    feed.close()
    await _settle()
    assert client.ended == [None] and feed.statistics()["followers"] == 0


async def test_what_deliver_raises_ends_it_and_is_handed_to_on_end() -> None:
    feed = Feed(MemoryEventStore())
    await _publish(feed, 1)
    gone = ConnectionResetError("the client left")

    async def deliver(entry: Entry) -> None:
        raise gone

    ended: list[BaseException | None] = []

    async def on_end(subscription: Subscription, reason: BaseException | None) -> None:
        ended.append(reason)

    await feed.subscribe("t", 0, deliver, push=lambda entry: False, on_end=on_end)
    await _settle()
    assert ended == [gone] and feed.statistics()["followers"] == 0


@pytest.mark.parametrize("after", [0, 3])
async def test_a_subscription_resumes_after_any_version(after: int) -> None:
    feed = Feed(MemoryEventStore(), retention=2)
    await _publish(feed, 5)
    client = _Client()
    await client.subscribe(feed, after)
    await _settle()
    assert client.delivered == list(range(after + 1, 6))

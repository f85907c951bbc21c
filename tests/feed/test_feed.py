"""The feed's semantics: ordering, resume, waiting and its timeout, bounded retention, slow followers."""

from __future__ import annotations

import asyncio

import pytest

from wirelab.feed import Entry, Feed, Lagged, MemoryEventStore, TopicClosed


def _data(version: int) -> dict[str, int]:
    return {"version": version}


async def _publish(feed: Feed, topic: str, count: int, *, final_last: bool = False) -> list[Entry]:
    return [
        await feed.publish(topic, "progress", _data, final=final_last and i == count - 1)
        for i in range(count)
    ]


async def test_publish_assigns_consecutive_versions_and_passes_them_to_the_data() -> None:
    feed = Feed(MemoryEventStore())
    entries = await _publish(feed, "t", 3)
    assert [e.version for e in entries] == [1, 2, 3]
    assert entries[2].data_json == '{"version":3}'
    assert (await feed.latest("t")) == entries[2]
    assert await feed.latest("nothing") is None


async def test_reads_beyond_retention_come_from_the_store() -> None:
    store = MemoryEventStore()
    feed = Feed(store, retention=2)
    await _publish(feed, "t", 6)
    assert [e.version for e in await feed.read("t", 0)] == [1, 2, 3, 4, 5, 6]
    assert [e.version for e in await feed.read("t", 4)] == [5, 6]


async def test_a_new_feed_on_the_same_store_continues_the_versions() -> None:
    store = MemoryEventStore()
    await _publish(Feed(store), "t", 3)
    again = Feed(store)
    assert (await feed_publish(again)).version == 4
    assert [e.version for e in await again.read("t", 1)] == [2, 3, 4]


async def feed_publish(feed: Feed) -> Entry:
    return await feed.publish("t", "progress", _data)


async def test_wait_returns_as_soon_as_a_newer_version_exists() -> None:
    feed = Feed(MemoryEventStore())
    await _publish(feed, "t", 1)
    waiter = asyncio.create_task(feed.wait("t", 1, 10))
    await asyncio.sleep(0.01)
    assert feed.statistics()["waiters"] == 1
    await _publish(feed, "t", 1)
    entry = await asyncio.wait_for(waiter, 1)
    assert entry is not None and entry.version == 2
    assert feed.statistics()["waiters"] == 0


async def test_wait_times_out_with_the_unchanged_latest() -> None:
    feed = Feed(MemoryEventStore())
    await _publish(feed, "t", 2)
    loop = asyncio.get_running_loop()
    start = loop.time()
    entry = await feed.wait("t", 2, 0.05)
    assert 0.04 <= loop.time() - start < 1
    assert entry is not None and entry.version == 2
    assert (await feed.wait("t", 1, 5)) == entry  # already newer: no wait at all


async def test_follow_delivers_every_version_in_order_and_stops_at_the_final_one() -> None:
    feed = Feed(MemoryEventStore(), retention=2)
    await _publish(feed, "t", 3)
    seen: list[int] = []

    async def deliver(entry: Entry) -> None:
        seen.append(entry.version)

    follower = asyncio.create_task(feed.follow("t", 1, deliver))
    await asyncio.sleep(0.01)
    await _publish(feed, "t", 4, final_last=True)
    assert await asyncio.wait_for(follower, 1) == 7
    assert seen == [2, 3, 4, 5, 6, 7]
    assert feed.statistics() == {"topics": 0, "waiters": 0, "followers": 0}
    with pytest.raises(TopicClosed):
        await _publish(feed, "t", 1)


async def test_follow_calls_on_idle_while_nothing_happens() -> None:
    feed = Feed(MemoryEventStore())
    beats = 0

    async def beat() -> None:
        nonlocal beats
        beats += 1

    async def deliver(entry: Entry) -> None:
        pass

    follower = asyncio.create_task(feed.follow("t", 0, deliver, idle=0.02, on_idle=beat))
    await asyncio.sleep(0.11)
    follower.cancel()
    with pytest.raises(asyncio.CancelledError):
        await follower
    assert 3 <= beats <= 6
    assert feed.statistics()["followers"] == 0


async def test_a_follower_too_far_behind_is_dropped_with_its_resume_point() -> None:
    feed = Feed(MemoryEventStore(), max_lag=3)
    stuck = asyncio.Event()
    seen: list[int] = []

    async def deliver(entry: Entry) -> None:
        seen.append(entry.version)
        await stuck.wait()  # a client that stopped reading

    follower = asyncio.create_task(feed.follow("t", 0, deliver))
    await asyncio.sleep(0)
    await _publish(feed, "t", 5)
    with pytest.raises(Lagged) as caught:
        await asyncio.wait_for(follower, 1)
    assert caught.value.cursor == 0 and seen == [1]
    assert feed.statistics()["followers"] == 0


async def test_cancelling_a_publisher_never_splits_memory_from_the_store() -> None:
    """The store write and the in-memory append happen together even if the caller is cancelled."""
    store = MemoryEventStore()
    feed = Feed(store)
    publisher = asyncio.create_task(feed.publish("t", "progress", _data))
    await asyncio.sleep(0)
    publisher.cancel()
    await asyncio.gather(publisher, return_exceptions=True)
    await asyncio.sleep(0)
    assert (await feed.publish("t", "progress", _data)).version == 2
    assert [e.version for e in await store.read("t", 0, 10)] == [1, 2]


async def test_close_releases_every_waiter_and_follower() -> None:
    feed = Feed(MemoryEventStore())
    await _publish(feed, "t", 1)

    async def deliver(entry: Entry) -> None:
        pass

    waiter = asyncio.create_task(feed.wait("t", 1, 30))
    follower = asyncio.create_task(feed.follow("t", 1, deliver))
    await asyncio.sleep(0.01)
    feed.close()
    assert (await asyncio.wait_for(waiter, 1)) is not None
    assert await asyncio.wait_for(follower, 1) == 1
    assert feed.statistics()["waiters"] == feed.statistics()["followers"] == 0


async def test_a_caught_up_follower_is_pushed_to_without_waking_its_task() -> None:
    """The fan-out fast path: push while caught up; pull (deliver) when push declines or at the end."""
    feed = Feed(MemoryEventStore())
    pushed: list[int] = []
    delivered: list[int] = []
    accept = True

    def push(entry: Entry) -> bool:
        if accept:
            pushed.append(entry.version)
        return accept

    async def deliver(entry: Entry) -> None:
        delivered.append(entry.version)

    follower = asyncio.create_task(feed.follow("t", 0, deliver, push=push))
    await asyncio.sleep(0.01)
    await _publish(feed, "t", 3)
    assert pushed == [1, 2, 3] and delivered == []
    accept = False  # the socket is busy: the task wakes and pulls
    await _publish(feed, "t", 2)
    await asyncio.sleep(0.01)
    assert delivered == [4, 5]
    accept = True
    await _publish(feed, "t", 1, final_last=True)  # a final entry is always pulled, then it ends
    assert await asyncio.wait_for(follower, 1) == 6
    assert pushed == [1, 2, 3] and delivered == [4, 5, 6]


async def test_a_closed_topic_answers_at_once_from_its_final_version() -> None:
    """Nothing can follow a final entry, so neither a follower nor a long poll waits for it."""
    feed = Feed(MemoryEventStore())
    entries = await _publish(feed, "t", 3, final_last=True)

    async def deliver(entry: Entry) -> None:
        raise AssertionError("nothing to deliver")

    assert await asyncio.wait_for(feed.follow("t", 3, deliver), 1) == 3
    assert await asyncio.wait_for(feed.wait("t", 3, 30), 1) == entries[-1]

"""Two feeds on one store, as two instances of the API share a database: versions never collide,
and each instance hears the other's writes through `refresh`."""

from __future__ import annotations

import asyncio
import json

import pytest

from wirelab.feed import Entry, Feed, MemoryEventStore, TopicClosed


def _data(version: int) -> dict[str, int]:
    return {"version": version}


async def test_a_writer_behind_the_store_catches_up_and_takes_the_next_version() -> None:
    store = MemoryEventStore()
    a, b = Feed(store), Feed(store)
    await a.publish("t", "e", _data)
    await b.latest("t")  # b loads the topic at version 1
    await b.read("t", 0)
    await a.publish("t", "e", _data)
    await a.publish("t", "e", _data)
    entry = await b.publish("t", "e", _data)
    assert entry.version == 4 and json.loads(entry.data_json) == {"version": 4}
    assert [e.version for e in await store.read("t", 0, 10)] == [1, 2, 3, 4]


async def test_update_sees_the_newest_entry_even_when_another_instance_wrote_it() -> None:
    store = MemoryEventStore()
    a, b = Feed(store), Feed(store)
    await a.publish("count", "n", lambda v: {"n": 1})
    await b.read("count", 0)
    await a.publish("count", "n", lambda v: {"n": 2})
    seen: list[int] = []

    def add_one(latest: Entry | None) -> tuple[str, object, bool]:
        n = json.loads(latest.data_json)["n"] if latest else 0
        seen.append(n)
        return "n", lambda v: {"n": n + 1}, False

    entry = await b.update("count", add_one)  # type: ignore[arg-type]
    assert entry is not None and json.loads(entry.data_json) == {"n": 3}
    assert seen == [1, 2]  # asked again about the newer entry after the conflict


async def test_update_may_decline() -> None:
    feed = Feed(MemoryEventStore())
    await feed.publish("t", "e", _data, final=True)
    assert await feed.update("other", lambda latest: None) is None
    assert await feed.latest("other") is None


async def test_refresh_delivers_another_instances_writes_to_local_followers() -> None:
    store = MemoryEventStore()
    writer, reader = Feed(store), Feed(store)
    await writer.publish("t", "e", _data)
    got: list[int] = []

    async def deliver(entry: Entry) -> None:
        got.append(entry.version)

    follower = asyncio.create_task(reader.follow("t", 0, deliver))
    await asyncio.sleep(0.01)
    assert got == [1]
    await writer.publish("t", "e", _data)
    await writer.publish("t", "e", _data, final=True)
    await asyncio.sleep(0.01)
    assert got == [1]  # not heard yet: no wake-up came
    waiting = asyncio.create_task(reader.wait("t", 1, 5))
    await reader.refresh("t")
    assert await asyncio.wait_for(follower, 1) == 3 and got == [1, 2, 3]
    woken = await asyncio.wait_for(waiting, 1)
    assert woken is not None and woken.version == 3


async def test_refresh_of_a_topic_nobody_reads_here_costs_nothing() -> None:
    feed = Feed(MemoryEventStore())
    await feed.refresh("unknown")
    assert feed.statistics()["topics"] == 0


async def test_on_commit_hears_every_committed_entry() -> None:
    heard: list[tuple[str, int]] = []
    feed = Feed(MemoryEventStore(), on_commit=lambda e: heard.append((e.topic, e.version)))
    await feed.publish("a", "e", _data)
    await feed.publish("b", "e", _data)
    assert heard == [("a", 1), ("b", 1)]


async def test_refresh_all_catches_up_every_topic_read_here() -> None:
    store = MemoryEventStore()
    writer, reader = Feed(store), Feed(store)
    for topic in ("a", "b"):
        await writer.publish(topic, "e", _data)
        await reader.read(topic, 0)
        await writer.publish(topic, "e", _data)
    await reader.refresh_all()
    assert [(await reader.read(t, 0))[-1].version for t in ("a", "b")] == [2, 2]


async def test_a_declined_or_refused_update_wakes_no_reader_and_keeps_no_closed_topic() -> None:
    feed = Feed(MemoryEventStore())
    await feed.publish("open", "e", _data)
    waiting = asyncio.create_task(feed.wait("open", 1, 0.3))
    await asyncio.sleep(0.01)
    assert await feed.update("open", lambda latest: None) is None
    assert not waiting.done()  # nothing new: the long poll keeps waiting
    assert (await waiting) is not None
    await feed.publish("closed", "e", _data, final=True)
    with pytest.raises(TopicClosed):
        await feed.update("closed", lambda latest: ("e", _data, False))
    assert feed.statistics()["topics"] == 1  # only "open" stays in memory

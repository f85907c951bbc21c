"""The broadcast half of the broker contract (see broker.py), run against every implementation.

`twins` are two brokers on one namespace, as two API instances: what one broadcasts, a listener
of the other hears. Engine specifics (queues, connections) are checked in test_amqp.py and
test_redis_streams.py.
"""

from __future__ import annotations

import asyncio

import pytest

from wirelab.pubsub import Broker, Listener, MemoryBroker
from wirelab.pubsub.listener import BACKLOG

TIMEOUT = 10
Twins = tuple[Broker, Broker]


async def _hear(listener: Listener, count: int) -> list[bytes]:
    """The next `count` bodies, failing rather than hanging if they do not come."""
    heard: list[bytes] = []
    iterator = aiter(listener)
    async with asyncio.timeout(TIMEOUT):
        while len(heard) < count:
            heard.append(await anext(iterator))
    return heard


async def _ended(listener: Listener) -> None:
    """The iteration ends (no error, no body), promptly."""
    async with asyncio.timeout(1):
        assert [body async for body in listener] == []


async def test_a_listener_hears_another_instances_broadcasts_in_order(twins: Twins) -> None:
    writer, reader = twins
    listener = await reader.listen("feed")
    sent = [f"jobs/{n}".encode() for n in range(50)]
    for body in sent:
        await writer.broadcast("feed", body)
    assert await _hear(listener, len(sent)) == sent


async def test_every_listener_hears_each_broadcast(twins: Twins) -> None:
    """The writer's own instance listens too, and hears its own broadcast like any other."""
    writer, reader = twins
    listeners = [await writer.listen("feed"), await reader.listen("feed"), await reader.listen("feed")]
    await writer.broadcast("feed", b"\x00one\xff")
    await writer.broadcast("feed", b"two")
    for listener in listeners:
        assert await _hear(listener, 2) == [b"\x00one\xff", b"two"]


async def test_nothing_is_stored_for_a_later_listener(twins: Twins) -> None:
    """A broadcast nobody listens to is no error, and is gone: the store holds the truth."""
    writer, reader = twins
    await writer.broadcast("feed", b"before")
    listener = await reader.listen("feed")
    await writer.broadcast("feed", b"after")
    assert await _hear(listener, 1) == [b"after"]


async def test_a_listener_hears_its_channel_alone(twins: Twins) -> None:
    """Channels are exact names: no other channel, and no wildcard matching."""
    writer, reader = twins
    listener = await reader.listen("feed.*")
    for channel in ("feed", "feed.jobs", "logins", "feed.*"):
        await writer.broadcast(channel, channel.encode())
    assert await _hear(listener, 1) == [b"feed.*"]


async def test_close_ends_the_iteration_promptly(twins: Twins) -> None:
    writer, reader = twins
    listener = await reader.listen("feed")
    reading = asyncio.create_task(_hear(listener, 2))
    await writer.broadcast("feed", b"one")
    await asyncio.sleep(0.05)  # the reader has taken "one" and waits for more
    await listener.close()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(reading, 1)
    await listener.close()  # twice is harmless
    await writer.broadcast("feed", b"after")  # and no listener is left to fill
    await _ended(listener)


async def test_close_drops_what_was_not_read(twins: Twins) -> None:
    writer, reader = twins
    listener = await reader.listen("feed")
    await writer.broadcast("feed", b"one")
    await writer.broadcast("feed", b"two")
    assert await _hear(listener, 1) == [b"one"]
    await listener.close()
    await _ended(listener)


async def test_closing_the_broker_ends_its_listeners(twins: Twins) -> None:
    writer, reader = twins
    listeners = [await reader.listen("feed"), await reader.listen("other")]
    waiting = [asyncio.create_task(_ended(listener)) for listener in listeners]
    await asyncio.sleep(0.05)
    await reader.close()
    await asyncio.gather(*waiting)
    if writer is not reader:
        await writer.broadcast("feed", b"nobody hears this")


async def test_a_closed_listener_leaves_no_task_behind(twins: Twins) -> None:
    writer, reader = twins
    await writer.broadcast("feed", b"opens the writer's channel, which outlives any listener")
    before = asyncio.all_tasks()
    listener = await reader.listen("feed")
    await writer.broadcast("feed", b"one")
    await _hear(listener, 1)
    await listener.close()
    await asyncio.sleep(0)
    assert [task for task in asyncio.all_tasks() - before if not task.done()] == []


async def test_a_listener_too_far_behind_loses_the_oldest() -> None:
    """A broadcast is a hint: past BACKLOG unread ones, the oldest go, not the process's memory."""
    broker = MemoryBroker()
    listener = await broker.listen("feed")
    for n in range(BACKLOG + 5):
        await broker.broadcast("feed", str(n).encode())
    await broker.broadcast("feed", b"last")
    heard = await _hear(listener, BACKLOG)
    assert heard[0] == b"6" and heard[-1] == b"last"
    await listener.close()

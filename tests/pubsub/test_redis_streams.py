"""Redis Streams specifics over a real Redis, beyond the contract suite (see redis_streams.py).

Redis runs on the test machines; where it is absent these tests skip with the reason, except under
CI=true, where they fail. Each test gets its own namespace, removed afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from tests.helpers import unavailable
from wirelab.pubsub import BrokerError, Delivery, Message, Subscription
from wirelab.pubsub.redis_streams import RedisBroker

REDIS_URL = os.environ.get("WIRELAB_TEST_REDIS", "redis://127.0.0.1:6379/0")
TIMEOUT = 10
VISIBILITY = 0.5  # seconds; short, so that reclaiming a dead consumer's entries is quick to see

OpenBroker = Callable[[], Awaitable[RedisBroker]]

# A consumer in its own process: it takes one message, says its id, then hangs until killed.
_DOOMED = """
import asyncio, sys
from wirelab.pubsub.redis_streams import RedisBroker

async def main() -> None:
    broker = RedisBroker(sys.argv[1], namespace=sys.argv[2])
    await broker.connect()
    async for delivery in await broker.subscribe("compress", ["image.uploaded"]):
        print(delivery.message.id, flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def _take(subscription: Subscription, count: int) -> list[Delivery]:
    taken: list[Delivery] = []
    async with asyncio.timeout(TIMEOUT):
        while len(taken) < count:
            taken.append(await anext(aiter(subscription)))
    return taken


async def _none_within(subscription: Subscription, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            await anext(aiter(subscription))


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    """A plain client, as another program would use; skips (fails under CI) without Redis."""
    client = Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except RedisError as exc:
        await client.aclose()
        unavailable(f"redis at {REDIS_URL} unavailable: {exc!r}")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def namespace() -> str:
    return f"wltest-{secrets.token_hex(4)}"


@pytest.fixture
async def open_broker(raw: Redis, namespace: str) -> AsyncIterator[OpenBroker]:
    """Connected brokers on one namespace, each its own client, as separate processes would be."""
    brokers: list[RedisBroker] = []

    async def open_one() -> RedisBroker:
        broker = RedisBroker(REDIS_URL, namespace=namespace, visibility_timeout=VISIBILITY)
        await broker.connect()
        brokers.append(broker)
        return broker

    try:
        yield open_one
    finally:
        for broker in brokers:
            await broker.close()
        cleaner = await open_one()
        await cleaner.destroy()
        await cleaner.close()


@pytest.fixture
async def broker(open_broker: OpenBroker) -> RedisBroker:
    return await open_broker()


async def test_a_retry_reaches_the_nacking_service_alone(broker: RedisBroker) -> None:
    """Every service reads the topic stream, so a retry goes to the service's own retry stream."""
    formatter = await broker.subscribe("format", ["t"])
    audit = await broker.subscribe("audit", ["t"])
    sent = await broker.publish("t", b"x")
    (first,) = await _take(formatter, 1)
    await first.nack("try again")
    (second,) = await _take(formatter, 1)
    assert second.message.id == sent and second.message.attempts == 2
    await second.ack()
    (copy,) = await _take(audit, 1)
    assert copy.message.id == sent and copy.message.attempts == 1
    await copy.ack()
    await _none_within(audit, 0.3)


async def test_a_killed_consumers_message_is_reclaimed_one_attempt_later(
    broker: RedisBroker, namespace: str
) -> None:
    """A process killed holding a message never hands it back: after the visibility timeout,
    another consumer of the service claims it, and it is delivered once more, with attempts 2."""
    await broker.declare("compress", ["image.uploaded"])
    sent = await broker.publish("image.uploaded", b"work")
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DOOMED, REDIS_URL, namespace, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert doomed.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            assert (await doomed.stdout.readline()).decode().strip() == sent
    finally:
        doomed.kill()
        await doomed.communicate()
    survivor = await broker.subscribe("compress", ["image.uploaded"])
    (again,) = await _take(survivor, 1)
    assert again.message.id == sent and again.message.attempts == 2
    await again.ack()
    await _none_within(survivor, 0.3)


async def test_a_consumer_that_lost_its_message_cannot_duplicate_it(broker: RedisBroker) -> None:
    """A consumer too slow for the visibility timeout loses its message to a reclaim; its late nack
    and its close then find nothing of theirs to hand back."""
    slow = await broker.subscribe("compress", ["t"])
    survivor = await broker.subscribe("compress", ["t"])
    sent = await broker.publish("t", b"work")
    (held,) = await _take(slow, 1)
    (again,) = await _take(survivor, 1)
    assert again.message.id == sent and again.message.attempts == 2
    await held.nack("too late")
    await slow.close()
    await again.ack()
    await _none_within(survivor, 0.3)
    assert await broker.dead_letters("compress") == []


async def test_prefetch_bounds_what_a_consumer_holds_across_streams(
    broker: RedisBroker, raw: Redis, namespace: str
) -> None:
    """XREADGROUP's COUNT is per stream; the consumer still holds at most `prefetch` in all."""
    subscription = await broker.subscribe("audit", ["a", "b", "c"], prefetch=2)
    for topic in ("a", "b", "c"):
        await broker.publish(topic, topic.encode())
    await _take(subscription, 2)
    await _none_within(subscription, 0.3)
    held = [await raw.xpending(f"{namespace}:topic:{t}", "audit") for t in "abc"]
    assert sum(summary["pending"] for summary in held) == 2


async def test_an_entry_another_program_added_is_consumed(
    broker: RedisBroker, raw: Redis, namespace: str
) -> None:
    """The documented fields, all of them or a body alone (the entry id becomes the message id)."""
    subscription = await broker.subscribe("notify", ["image.formatted"])
    stream = f"{namespace}:topic:image.formatted"
    fields: dict[FieldT, EncodableT] = {"id": "m-1", "topic": "image.formatted", "body": b"\x00full"}
    fields |= {"attempts": "1", "headers": '{"job": "j9"}'}
    await raw.xadd(stream, fields)
    bare = await raw.xadd(stream, {"body": "bare"})
    assert isinstance(bare, bytes)
    full, minimal = await _take(subscription, 2)
    assert full.message == Message("image.formatted", b"\x00full", "m-1", 1, {"job": "j9"})
    assert minimal.message == Message("image.formatted", b"bare", bare.decode(), 1, {})
    await full.ack()
    await minimal.ack()


async def test_a_malformed_entry_is_dead_lettered(broker: RedisBroker, raw: Redis, namespace: str) -> None:
    subscription = await broker.subscribe("notify", ["t"])
    await raw.xadd(f"{namespace}:topic:t", {"body": "junk", "headers": "not json"})
    await broker.publish("t", b"fine")
    (delivery,) = await _take(subscription, 1)
    assert delivery.message.body == b"fine"
    (letter,) = await broker.dead_letters("notify")
    assert letter.message.body == b"junk" and letter.reason.startswith("malformed entry")


async def test_publishing_to_a_topic_nobody_declared_stores_nothing(
    broker: RedisBroker, raw: Redis, namespace: str
) -> None:
    await broker.publish("nobody.listens", b"x")
    assert not await raw.exists(f"{namespace}:topic:nobody.listens")


@pytest.mark.parametrize("closing", ["subscription", "broker"])
async def test_closing_ends_a_waiting_reader_promptly(open_broker: OpenBroker, closing: str) -> None:
    """A reader blocked in XREAD stops within one BLOCK period (at most a second), taking nothing."""
    broker = await open_broker()
    subscription = await broker.subscribe("notify", ["t"])

    async def read() -> Delivery:
        return await anext(aiter(subscription))

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.1)  # the reader now waits in XREAD BLOCK
    await (subscription.close() if closing == "subscription" else broker.close())
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(VISIBILITY):
            await reader


async def _subscribers(raw: Redis, channel: str, count: int) -> None:
    """Wait until `channel` has `count` subscribers: Redis drops a closed one on its next loop."""
    async with asyncio.timeout(TIMEOUT):
        while (await raw.pubsub_numsub(channel))[0][1] != count:  # noqa: ASYNC110  (nothing to await)
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("closing", ["listener", "broker"])
async def test_a_listener_owns_a_subscribed_connection_until_closed(
    broker: RedisBroker, raw: Redis, namespace: str, closing: str
) -> None:
    """Any Redis client can wake the instances: PUBLISH to {ns}:broadcast:{channel}."""
    channel = f"{namespace}:broadcast:feed"
    listener = await broker.listen("feed")
    assert (await raw.pubsub_numsub(channel))[0][1] == 1
    await raw.publish(channel, b"jobs/7")
    async with asyncio.timeout(TIMEOUT):
        assert await anext(aiter(listener)) == b"jobs/7"
    await (listener.close() if closing == "listener" else broker.close())
    await _subscribers(raw, channel, 0)


async def test_a_listener_whose_connection_is_killed_ends_in_broker_error(
    broker: RedisBroker, raw: Redis, namespace: str
) -> None:
    """Broadcasts were missed meanwhile, so its owner must hear of it, as on RabbitMQ."""
    before = {client["id"] for client in await raw.client_list(_type="pubsub")}
    listener = await broker.listen("feed")
    (mine,) = [c["id"] for c in await raw.client_list(_type="pubsub") if c["id"] not in before]
    await raw.client_kill_filter(_id=mine)
    with pytest.raises(BrokerError, match="lost its connection"):
        async with asyncio.timeout(TIMEOUT):
            await anext(aiter(listener))
    await _subscribers(raw, f"{namespace}:broadcast:feed", 0)
    await listener.close()


def test_the_visibility_timeout_comes_from_the_url_and_never_reaches_redis() -> None:
    from wirelab.errors import ConfigError
    from wirelab.pubsub.redis_streams import _visibility_from

    assert _visibility_from("redis://h:1/0", 30.0) == ("redis://h:1/0", 30.0)
    assert _visibility_from("redis://h:1/0?visibility_timeout=2.5", 30.0) == ("redis://h:1/0", 2.5)
    assert _visibility_from("redis://h/0?db=1&visibility_timeout=4", 30.0) == ("redis://h/0?db=1", 4.0)
    with pytest.raises(ConfigError, match="visibility_timeout"):
        _visibility_from("redis://h/0?visibility_timeout=soon", 30.0)

"""The broker contract, run against every implementation over real connections (see broker.py)."""

from __future__ import annotations

import asyncio

import pytest

from wirelab.pubsub import Broker, BrokerError, Delivery, Subscription

TIMEOUT = 10


async def _take(subscription: Subscription, count: int) -> list[Delivery]:
    """The next `count` deliveries, failing rather than hanging if they do not come."""
    taken: list[Delivery] = []
    iterator = aiter(subscription)
    async with asyncio.timeout(TIMEOUT):
        while len(taken) < count:
            taken.append(await anext(iterator))
    return taken


async def _none_within(subscription: Subscription, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            await anext(aiter(subscription))


async def test_a_message_reaches_every_service_once(broker: Broker) -> None:
    """Pub/sub: each subscribing service gets its own copy."""
    compress = await broker.subscribe("compress", ["image.uploaded"])
    audit = await broker.subscribe("audit", ["image.uploaded", "image.formatted"])
    message_id = await broker.publish("image.uploaded", b"\x00raw\xff", headers={"job": "j1"})
    for subscription in (compress, audit):
        (delivery,) = await _take(subscription, 1)
        assert delivery.message.id == message_id
        assert delivery.message.topic == "image.uploaded"
        assert delivery.message.body == b"\x00raw\xff"
        assert delivery.message.headers == {"job": "j1"} and delivery.message.attempts == 1
        await delivery.ack()
    await broker.publish("image.formatted", b"f")
    assert [d.message.body for d in await _take(audit, 1)] == [b"f"]
    await _none_within(compress, 0.3)


async def test_consumers_of_one_service_share_its_messages(broker: Broker) -> None:
    """Work queue: competing consumers, each message to exactly one of them."""
    first = await broker.subscribe("format", ["image.compressed"], prefetch=1)
    second = await broker.subscribe("format", ["image.compressed"], prefetch=1)
    sent = [await broker.publish("image.compressed", str(n).encode()) for n in range(6)]
    seen: list[str] = []
    all_seen = asyncio.Event()

    async def work(subscription: Subscription) -> None:
        async for delivery in subscription:
            seen.append(delivery.message.id)
            await asyncio.sleep(0.02)
            await delivery.ack()
            if len(seen) == len(sent):
                all_seen.set()

    workers = [asyncio.create_task(work(s)) for s in (first, second)]
    async with asyncio.timeout(TIMEOUT):
        await all_seen.wait()
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    assert sorted(seen) == sorted(sent)


async def test_messages_wait_in_a_declared_queue_for_their_first_consumer(broker: Broker) -> None:
    await broker.declare("notify", ["image.formatted"])
    await broker.publish("image.formatted", b"early")
    subscription = await broker.subscribe("notify", ["image.formatted"])
    assert [d.message.body for d in await _take(subscription, 1)] == [b"early"]


async def test_prefetch_bounds_the_unacknowledged(broker: Broker) -> None:
    subscription = await broker.subscribe("format", ["t"], prefetch=2)
    for n in range(4):
        await broker.publish("t", bytes([n]))
    first_two = await _take(subscription, 2)
    await _none_within(subscription, 0.3)
    await first_two[0].ack()
    (third,) = await _take(subscription, 1)
    assert [d.message.body for d in [*first_two, third]] == [b"\x00", b"\x01", b"\x02"]


async def test_a_consumer_gone_without_acking_gets_its_messages_redelivered(broker: Broker) -> None:
    """At-least-once: what a dead consumer held goes to another, one attempt later."""
    doomed = await broker.subscribe("compress", ["image.uploaded"], prefetch=4)
    survivor = await broker.subscribe("compress", ["image.uploaded"], prefetch=4)
    sent = await broker.publish("image.uploaded", b"work")
    taken = await _take(doomed, 1)
    assert taken[0].message.id == sent
    await doomed.close()
    (again,) = await _take(survivor, 1)
    assert again.message.id == sent and again.message.attempts == 2
    await again.ack()
    await _none_within(survivor, 0.3)


async def test_nack_redelivers_then_dead_letters_with_the_reason(broker: Broker) -> None:
    subscription = await broker.subscribe("format", ["t"], max_attempts=3)
    sent = await broker.publish("t", b"poison")
    for attempt in (1, 2, 3):
        (delivery,) = await _take(subscription, 1)
        assert delivery.message.id == sent and delivery.message.attempts == attempt
        await delivery.nack(f"failed attempt {attempt}")
    await _none_within(subscription, 0.3)
    (letter,) = await broker.dead_letters("format")
    assert letter.service == "format" and letter.reason == "failed attempt 3"
    assert letter.message.id == sent and letter.message.body == b"poison"
    assert await broker.replay("format") == 1
    assert await broker.dead_letters("format") == []
    (replayed,) = await _take(subscription, 1)
    assert replayed.message.body == b"poison" and replayed.message.attempts == 1
    await replayed.ack()


async def test_nack_without_retry_dead_letters_at_once(broker: Broker) -> None:
    subscription = await broker.subscribe("format", ["t"], max_attempts=3)
    sent = await broker.publish("t", b"malformed")
    (delivery,) = await _take(subscription, 1)
    await delivery.nack("malformed: not JSON", retry=False)
    await _none_within(subscription, 0.3)
    (letter,) = await broker.dead_letters("format")
    assert letter.message.id == sent and letter.message.attempts == 1
    assert letter.reason == "malformed: not JSON"


async def test_a_delivery_is_settled_once(broker: Broker) -> None:
    subscription = await broker.subscribe("format", ["t"])
    await broker.publish("t", b"x")
    (delivery,) = await _take(subscription, 1)
    await delivery.ack()
    with pytest.raises(BrokerError):
        await delivery.ack()


async def test_one_consumer_sees_one_publisher_in_order(broker: Broker) -> None:
    subscription = await broker.subscribe("notify", ["t"], prefetch=50)
    sent = [await broker.publish("t", str(n).encode()) for n in range(50)]
    taken = await _take(subscription, 50)
    assert [d.message.id for d in taken] == sent
    for delivery in taken:
        await delivery.ack()

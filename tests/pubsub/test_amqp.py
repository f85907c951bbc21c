"""What the RabbitMQ adapter promises beyond the contract, checked on the wire with plain aio-pika.

The contract suite (test_contract.py) runs against AmqpBroker too; these tests look at what only
AMQP shows: durability flags, delivery modes and headers as another AMQP client sees them, and a
connection that dies without an AMQP close. Skipped without RabbitMQ, failed under CI=true.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import ChannelNotFoundEntity, ChannelPreconditionFailed
from aiormq.exceptions import ChannelLockedResource
from pamqp.common import FieldTable

from tests.helpers import unavailable
from wirelab.pubsub import BrokerError, Delivery, Subscription
from wirelab.pubsub.amqp import ATTEMPTS, REASON, TOPIC, AmqpBroker
from wirelab.pubsub.factory import remove_namespace

AMQP_URL = os.environ.get("WIRELAB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
TIMEOUT = 10


@pytest.fixture
def namespace() -> str:
    return f"wltest-{secrets.token_hex(4)}"


@pytest.fixture
async def broker(namespace: str) -> AsyncIterator[AmqpBroker]:
    broker = AmqpBroker(AMQP_URL, namespace=namespace)
    try:
        await broker.connect()
    except BrokerError as exc:
        unavailable(f"RabbitMQ unavailable: {exc}")
    try:
        yield broker
    finally:
        await broker.destroy()
        await broker.close()


@pytest.fixture
async def raw(broker: AmqpBroker) -> AsyncIterator[AbstractConnection]:
    """A second, plain aio-pika connection: another AMQP client's view of the same broker."""
    connection = await aio_pika.connect(AMQP_URL)
    async with connection:
        yield connection


async def _take(subscription: Subscription) -> Delivery:
    async with asyncio.timeout(TIMEOUT):
        return await anext(aiter(subscription))


@contextlib.asynccontextmanager
async def _cuttable(url: str) -> AsyncIterator[tuple[str, Callable[[], None]]]:
    """A TCP relay to RabbitMQ and a function that aborts its sockets, as a dead network or a
    killed process would: no AMQP close, no FIN, only a reset."""
    target = urlsplit(url)
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(target.hostname, target.port or 5672)
        writers.extend((client_writer, server_writer))
        await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer))

    def cut() -> None:
        for writer in writers:
            writer.transport.abort()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    credentials = target.netloc.rpartition("@")[0]
    try:
        yield urlunsplit(target._replace(netloc=f"{credentials}@127.0.0.1:{port}")), cut
    finally:
        cut()
        server.close()
        await server.wait_closed()


async def test_exchanges_and_queues_are_durable(broker: AmqpBroker, raw: AbstractConnection) -> None:
    """Redeclaring with durable=False is refused as inequivalent only if RabbitMQ holds them durable."""
    namespace = broker.namespace
    await broker.declare("compress", ["image.uploaded"])
    arguments: FieldTable = {
        "x-dead-letter-exchange": f"{namespace}.dlx",
        "x-dead-letter-routing-key": "compress",
    }
    redeclarations: list[Callable[[AbstractChannel], Awaitable[object]]] = [
        lambda c: c.declare_exchange(namespace, aio_pika.ExchangeType.TOPIC, durable=False),
        lambda c: c.declare_exchange(f"{namespace}.dlx", aio_pika.ExchangeType.DIRECT, durable=False),
        lambda c: c.declare_queue(f"{namespace}.compress", durable=False, arguments=arguments),
        lambda c: c.declare_queue(f"{namespace}.compress.dead", durable=False),
    ]
    for redeclare in redeclarations:
        channel = await raw.channel()
        with pytest.raises(ChannelPreconditionFailed, match="durable"):
            await redeclare(channel)


async def test_a_published_message_is_persistent_plain_amqp(
    broker: AmqpBroker, raw: AbstractConnection
) -> None:
    await broker.declare("compress", ["image.uploaded"])
    sent = await broker.publish("image.uploaded", b"keep", headers={"job": "j1"})
    async with raw.channel() as channel:
        queue = await channel.get_queue(f"{broker.namespace}.compress", ensure=False)
        incoming = await queue.get(timeout=TIMEOUT)
        assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert incoming.message_id == sent and incoming.body == b"keep"
        assert incoming.exchange == broker.namespace and incoming.routing_key == "image.uploaded"
        assert incoming.headers == {"job": "j1"}


async def test_a_dead_letter_is_persistent_and_carries_why(
    broker: AmqpBroker, raw: AbstractConnection
) -> None:
    subscription = await broker.subscribe("format", ["image.compressed"], max_attempts=1)
    sent = await broker.publish("image.compressed", b"poison", headers={"job": "j2"})
    await (await _take(subscription)).nack("corrupt image")
    async with raw.channel() as channel:
        queue = await channel.get_queue(f"{broker.namespace}.format.dead", ensure=False)
        incoming = await queue.get(timeout=TIMEOUT)
        assert incoming.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert incoming.message_id == sent and incoming.body == b"poison"
        assert incoming.headers == {
            "job": "j2",
            TOPIC: "image.compressed",
            ATTEMPTS: 1,
            REASON: "corrupt image",
        }


async def test_a_plain_amqp_publisher_is_heard(broker: AmqpBroker, raw: AbstractConnection) -> None:
    """No wirelab header is needed: a message without x-wirelab-attempts is on its first attempt."""
    subscription = await broker.subscribe("compress", ["image.uploaded"])
    async with raw.channel() as channel:
        exchange = await channel.get_exchange(broker.namespace, ensure=False)
        plain = aio_pika.Message(b"from elsewhere", message_id="raw-1", headers={"job": "j7"})
        await exchange.publish(plain, routing_key="image.uploaded")
    delivery = await _take(subscription)
    assert delivery.message.id == "raw-1" and delivery.message.body == b"from elsewhere"
    assert delivery.message.topic == "image.uploaded" and delivery.message.attempts == 1
    assert delivery.message.headers == {"job": "j7"}
    await delivery.ack()


async def test_what_rabbitmq_dead_letters_itself_is_listed_and_replayed(
    broker: AmqpBroker, raw: AbstractConnection
) -> None:
    """A reject from another client goes through the queue's x-dead-letter-exchange; x-death says why."""
    await broker.declare("compress", ["image.uploaded"])
    sent = await broker.publish("image.uploaded", b"refused")
    async with raw.channel() as channel:
        queue = await channel.get_queue(f"{broker.namespace}.compress", ensure=False)
        await (await queue.get(timeout=TIMEOUT)).reject(requeue=False)
    async with asyncio.timeout(TIMEOUT):  # RabbitMQ dead-letters asynchronously: nothing to await
        while not (letters := await broker.dead_letters("compress")):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    (letter,) = letters
    assert letter.reason == "rejected" and letter.message.id == sent
    assert letter.message.topic == "image.uploaded" and letter.message.headers == {}
    assert await broker.replay("compress") == 1
    delivery = await _take(await broker.subscribe("compress", ["image.uploaded"]))
    assert delivery.message.id == sent and delivery.message.attempts == 1
    assert delivery.message.topic == "image.uploaded"


async def test_a_connection_cut_without_a_close_still_redelivers(broker: AmqpBroker) -> None:
    """RabbitMQ requeues what a vanished connection held; its subscription ends in BrokerError."""
    async with _cuttable(AMQP_URL) as (url, cut):
        doomed_broker = AmqpBroker(url, namespace=broker.namespace)
        await doomed_broker.connect()
        doomed = await doomed_broker.subscribe("compress", ["image.uploaded"], prefetch=4)
        sent = await broker.publish("image.uploaded", b"work")
        held = await _take(doomed)
        survivor = await broker.subscribe("compress", ["image.uploaded"])
        cut()
        again = await _take(survivor)
        assert again.message.id == sent and again.message.attempts == 2
        await again.ack()
        with pytest.raises(BrokerError):
            await _take(doomed)
        with pytest.raises(BrokerError):
            await held.ack()
        async with asyncio.timeout(TIMEOUT):
            await doomed_broker.close()


async def test_a_queue_deleted_under_a_subscription_ends_it(
    broker: AmqpBroker, raw: AbstractConnection
) -> None:
    """RabbitMQ cancels the consumer (basic.cancel); waiting forever would hide it."""
    subscription = await broker.subscribe("compress", ["image.uploaded"])
    async with raw.channel() as channel:
        await channel.queue_delete(f"{broker.namespace}.compress")
    with pytest.raises(BrokerError):
        await _take(subscription)


async def test_a_refused_publish_does_not_break_the_next(
    broker: AmqpBroker, raw: AbstractConnection
) -> None:
    """A publish to a deleted exchange closes the publishing channel; the next one reopens it."""
    async with raw.channel() as channel:
        await channel.exchange_delete(broker.namespace)
        with pytest.raises(BrokerError, match="NOT_FOUND"):
            await broker.publish("image.uploaded", b"lost")
        await channel.declare_exchange(broker.namespace, aio_pika.ExchangeType.TOPIC, durable=True)
    await broker.publish("image.uploaded", b"heard")


async def test_remove_namespace_finds_queues_declared_by_another_broker(
    broker: AmqpBroker, raw: AbstractConnection
) -> None:
    """AMQP cannot list queues, so the namespace keeps a catalog of its services."""
    await broker.declare("compress", ["image.uploaded"])
    await broker.declare("audit", ["image.uploaded"])
    await remove_namespace(AMQP_URL, broker.namespace)
    for name in ("compress", "compress.dead", "audit", "audit.dead"):
        channel = await raw.channel()
        with pytest.raises(ChannelNotFoundEntity):
            await channel.declare_queue(f"{broker.namespace}.{name}", passive=True)


async def _queue_exists(raw: AbstractConnection, name: str) -> bool:
    """Asked by passive declaration; another connection's exclusive queue exists but is locked."""
    channel = await raw.channel()
    try:
        await channel.declare_queue(name, passive=True)
    except ChannelLockedResource:
        return True
    except ChannelNotFoundEntity:
        return False
    await channel.close()
    return True


async def test_a_broadcast_is_transient_plain_amqp(broker: AmqpBroker, raw: AbstractConnection) -> None:
    """Any AMQP client can hear broadcasts: bind a queue to ns.broadcast by the channel's name."""
    async with raw.channel() as channel:
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(f"{broker.namespace}.broadcast", routing_key="feed")
        await broker.broadcast("feed", b"jobs/7")  # unconfirmed: consume, since a get may come first
        async with queue.iterator(no_ack=True) as messages:
            incoming = await asyncio.wait_for(anext(aiter(messages)), TIMEOUT)
        assert incoming.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT
        assert incoming.body == b"jobs/7" and incoming.routing_key == "feed"


async def test_a_listeners_queue_is_exclusive_and_deleted_on_close(
    broker: AmqpBroker, raw: AbstractConnection
) -> None:
    listener = await broker.listen("feed")
    assert listener.queue_name is not None
    channel = await raw.channel()
    with pytest.raises(ChannelLockedResource):  # no other connection may even look at it
        await channel.declare_queue(listener.queue_name, passive=True)
    await listener.close()
    assert not await _queue_exists(raw, listener.queue_name)


async def test_destroy_removes_the_broadcast_exchange_and_listeners(
    broker: AmqpBroker, raw: AbstractConnection
) -> None:
    listener = await broker.listen("feed")
    assert listener.queue_name is not None
    await broker.destroy()
    assert [body async for body in listener] == []
    assert not await _queue_exists(raw, listener.queue_name)
    channel = await raw.channel()
    with pytest.raises(ChannelNotFoundEntity):
        await channel.declare_exchange(f"{broker.namespace}.broadcast", passive=True)


async def test_a_connection_cut_ends_a_listener_and_takes_its_queue(
    broker: AmqpBroker, raw: AbstractConnection
) -> None:
    """A killed process cannot delete its queue: exclusivity makes RabbitMQ do it."""
    async with _cuttable(AMQP_URL) as (url, cut):
        doomed_broker = AmqpBroker(url, namespace=broker.namespace)
        await doomed_broker.connect()
        listener = await doomed_broker.listen("feed")
        assert listener.queue_name is not None
        cut()
        with pytest.raises(BrokerError):
            async with asyncio.timeout(TIMEOUT):
                await anext(aiter(listener))
        async with asyncio.timeout(TIMEOUT):  # RabbitMQ notices the dead connection in its time
            while await _queue_exists(raw, listener.queue_name):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
            await doomed_broker.close()


async def test_errors_are_broker_errors_without_the_password() -> None:
    broker = AmqpBroker("amqp://guest:s3cret@127.0.0.1:1/", namespace="unused")
    with pytest.raises(BrokerError) as refused:
        await broker.connect()
    assert "s3cret" not in str(refused.value)
    with pytest.raises(BrokerError, match="not connected"):
        await broker.publish("t", b"x")

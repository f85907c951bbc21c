"""The peer of `wirelab bench pubsub`: the publish/consume loop one writes with aio-pika alone.

Theory of operation: to price what wirelab's RabbitMQ adapter adds, the bench runs the same
traffic through the thinnest correct aio-pika code, on the same RabbitMQ, in the same process. It
keeps exactly what the adapter's happy path asks of the server and nothing of what the adapter adds
in Python:

    kept     a durable topic exchange, one durable queue per service bound to its topics,
             persistent messages, a channel with publisher confirms where each publish is awaited,
             and per consumer its own channel with basic.qos(prefetch), consuming through aio-pika's
             queue iterator and acknowledging each message by hand
    dropped  message ids, headers, attempt counting, dead-letter routing, the catalog of services,
             error translation, and the Delivery objects of the broker contract

It has the shape of the broker contract (connect, declare, publish, subscribe, destroy) only so that
the bench drives it with the very code that drives the brokers; its deliveries are aio-pika's own.
"""

from __future__ import annotations

from collections.abc import Sequence

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractQueueIterator,
)

__all__ = ["BareAmqp", "BareSubscription"]


class BareSubscription:
    """One consumer: its own channel, its prefetch, aio-pika's queue iterator."""

    def __init__(self, channel: AbstractChannel, iterator: AbstractQueueIterator) -> None:
        self._channel = channel
        self._iterator = iterator

    def __aiter__(self) -> AbstractQueueIterator:
        return self._iterator

    async def close(self) -> None:
        await self._iterator.close()
        await self._channel.close()


class BareAmqp:
    def __init__(self, url: str, *, namespace: str) -> None:
        self._url = url
        self._ns = namespace
        self._connection: AbstractConnection | None = None
        self._exchange: AbstractExchange | None = None
        self._queues: set[str] = set()

    async def connect(self) -> None:
        self._connection = await aio_pika.connect(self._url)
        channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await channel.declare_exchange(self._ns, aio_pika.ExchangeType.TOPIC, durable=True)

    async def close(self) -> None:
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()

    async def publish(self, topic: str, body: bytes) -> None:
        assert self._exchange is not None, "connect() first"
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self._exchange.publish(message, routing_key=topic)

    async def declare(self, service: str, topics: Sequence[str]) -> None:
        async with self._open().channel() as channel:
            queue = await channel.declare_queue(self._queue(service), durable=True)
            for topic in topics:
                await queue.bind(self._ns, routing_key=topic)
        self._queues.add(self._queue(service))

    async def subscribe(self, service: str, topics: Sequence[str], *, prefetch: int) -> BareSubscription:
        await self.declare(service, topics)
        channel = await self._open().channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.get_queue(self._queue(service), ensure=False)
        iterator = queue.iterator()
        await iterator.consume()
        return BareSubscription(channel, iterator)

    async def destroy(self) -> None:
        async with self._open().channel() as channel:
            for name in self._queues:
                await channel.queue_delete(name)
            await channel.exchange_delete(self._ns)
        self._queues.clear()

    def _open(self) -> AbstractConnection:
        assert self._connection is not None, "connect() first"
        return self._connection

    def _queue(self, service: str) -> str:
        return f"{self._ns}.{service}"

"""The broker contract over RabbitMQ (AMQP 0.9.1), with aio-pika.

Theory of operation. Everything a broker makes lives under its namespace `ns`:

    exchange ns                topic, durable; publish(topic) routes by the exact routing key
    queue    ns.SERVICE        durable, bound once per topic; its consumers compete for it
    exchange ns.dlx            direct, durable; a service's dead letters, routed by its name
    queue    ns.SERVICE.dead   durable, bound to ns.dlx by SERVICE
    queue    ns:services       durable, one message per service declared, because AMQP cannot
                               list queues and destroy() in another process must find them
    exchange ns.broadcast      direct, durable; broadcast(channel) routes by the channel's name
    queue    (server-named)    one per listener: exclusive, auto-delete, bound by its channel

Messages are persistent and a publish returns only after its publisher confirm, so a returned id
means every bound queue holds the message on disk. Each subscription owns a channel with
basic.qos(prefetch) and acknowledges manually; closing that channel, or losing the connection,
makes RabbitMQ requeue whatever it held, with the redelivered flag set.

AMQP keeps no attempt counter, so a message carries one in the header x-wirelab-attempts (absent
means 1, as from any plain AMQP publisher) and a delivery reads attempts = header + 1 when it is
redelivered. nack() publishes a copy with attempts + 1 to the service queue, or once max_attempts
is spent a dead letter with x-wirelab-reason to ns.dlx, and acknowledges the original only after
the copy is confirmed: a crash in between duplicates a message, never loses one. Copies travel by
the default exchange (straight to one queue, not fanned out again), so the topic rides along in
x-wirelab-topic. The service queue also names ns.dlx as its x-dead-letter-exchange, so what
RabbitMQ discards by itself (a reject from another client, a TTL or length policy) lands in the
same dead queue; its reason and topic are then read from x-death.

Limits, chosen with open eyes: the redelivered flag is one bit, so a message whose consumers died
twice reads one extra attempt, not two (quorum queues count deliveries, but their limits and
counting rules differ between RabbitMQ 3 and 4); messages a consumer had prefetched but not yet
handed out count as delivered. The connection is plain, not robust: a lost connection, like a
consumer RabbitMQ cancels (its queue deleted), ends the subscription with BrokerError, and
reconnecting is the caller's policy, so nothing silently re-consumes behind a subscription whose
deliveries can no longer be acknowledged; a listener ends the same way. Only the shared
publishing channels are reopened on demand, since a channel error (a publish to a deleted
exchange) would otherwise outlive its cause.

Broadcasts are hints, not messages, and skip the durability above: transient, published without
confirms on a channel of their own, consumed with no-ack. A lost one costs a late read of the
store, while a confirm would cost a round trip on every feed write. A listener consumes its own
queue on its own channel; the queue is exclusive, so a process that dies takes its queues with
it, and close() deletes it at once. Without confirms, a broadcast RabbitMQ refuses (its exchange
deleted) is lost without an error, like any broadcast nobody hears.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    HeadersType,
)
from aio_pika.exceptions import AMQPError, ChannelInvalidStateError, ChannelNotFoundEntity
from pamqp.common import FieldTable
from pamqp.exceptions import PAMQPException

from wirelab.pubsub.broker import BrokerError, DeadLetter, Message
from wirelab.pubsub.listener import QueueListener

__all__ = [
    "ATTEMPTS",
    "REASON",
    "TOPIC",
    "AmqpBroker",
    "AmqpDelivery",
    "AmqpListener",
    "AmqpSubscription",
]

ATTEMPTS = "x-wirelab-attempts"
REASON = "x-wirelab-reason"
TOPIC = "x-wirelab-topic"
# Headers this adapter or RabbitMQ add; Message.headers shows only the publisher's own.
_NOT_USER = ("x-wirelab-", "x-death", "x-first-death-", "x-last-death-", "x-delivery-count")
_FAILURES = (AMQPError, ChannelInvalidStateError, OSError, PAMQPException)


@contextlib.contextmanager
def _translated(doing: str) -> Iterator[None]:
    """aio-pika's exceptions stop here: users of the contract only ever see BrokerError."""
    try:
        yield
    except _FAILURES as exc:
        raise BrokerError(f"amqp: {doing} failed: {exc!r}") from exc


def _text(value: object) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes | bytearray) else str(value)


def _first_death(headers: HeadersType) -> Mapping[str, Any]:
    """RabbitMQ's own record of why it dead-lettered a message (x-death, newest first)."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def _decode(incoming: AbstractIncomingMessage, *, redelivered: bool) -> Message:
    headers = incoming.headers
    rerouted = _first_death(headers).get("routing-keys") or [incoming.routing_key or ""]
    try:
        attempts = max(1, int(_text(headers.get(ATTEMPTS, 1))))
    except ValueError:
        attempts = 1
    return Message(
        topic=_text(headers.get(TOPIC) or rerouted[0]),
        body=incoming.body,
        id=incoming.message_id or "",  # a plain AMQP publisher may send none
        attempts=attempts + int(redelivered),
        headers={key: _text(value) for key, value in headers.items() if not key.startswith(_NOT_USER)},
    )


def _copy(
    incoming: AbstractIncomingMessage, message: Message, *, attempts: int, reason: str | None = None
) -> aio_pika.Message:
    """A persistent copy of `incoming` for another queue, carrying its topic, attempts and reason."""
    headers: HeadersType = {**message.headers, TOPIC: message.topic, ATTEMPTS: attempts}
    if reason is not None:
        headers[REASON] = reason
    return aio_pika.Message(
        incoming.body,
        headers=headers,
        message_id=incoming.message_id,
        content_type=incoming.content_type,
        content_encoding=incoming.content_encoding,
        correlation_id=incoming.correlation_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


class AmqpDelivery:
    __slots__ = ("_incoming", "_settled", "_subscription", "message")

    def __init__(self, subscription: AmqpSubscription, incoming: AbstractIncomingMessage) -> None:
        self._subscription = subscription
        self._incoming = incoming
        self._settled = False
        self.message = _decode(incoming, redelivered=bool(incoming.redelivered))

    async def ack(self) -> None:
        self._settle()
        try:  # the hot path: no context manager, no message built unless it fails
            await self._incoming.ack()
        except _FAILURES as exc:
            raise BrokerError(f"amqp: acknowledging {self.message.id} failed: {exc!r}") from exc

    async def nack(self, reason: str, *, retry: bool = True) -> None:
        """Republish (attempts + 1) or dead-letter, confirmed, then ack the original."""
        self._settle()
        if self._subscription.is_closed:  # RabbitMQ requeued it already: a copy would duplicate
            raise BrokerError(f"amqp: {self.message.id} was requeued when its subscription closed")
        await self._subscription.retry(self._incoming, self.message, reason, again=retry)
        with _translated(f"acknowledging {self.message.id}"):
            await self._incoming.ack()

    def _settle(self) -> None:
        if self._settled:
            raise BrokerError(f"message {self.message.id} was already acknowledged or rejected")
        self._settled = True


class AmqpSubscription:
    """One consumer on its own channel, so that its prefetch and its fate are its own."""

    def __init__(
        self, broker: AmqpBroker, service: str, channel: AbstractChannel, max_attempts: int
    ) -> None:
        self._broker = broker
        self._service = service
        self._channel = channel
        self._max_attempts = max_attempts
        self._inbox: asyncio.Queue[AbstractIncomingMessage | None] = asyncio.Queue()
        self._closing = False
        channel.close_callbacks.add(self._on_stopped)

    async def start(self, queue_name: str, prefetch: int) -> None:
        with _translated(f"consuming {queue_name!r}"):
            await self._channel.set_qos(prefetch_count=prefetch)
            queue = await self._channel.get_queue(queue_name, ensure=False)
            underlay = await self._channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(self._on_stopped)  # e.g. its queue deleted
            await queue.consume(self._on_message, no_ack=False)

    @property
    def is_closed(self) -> bool:
        return self._channel.is_closed

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        self._inbox.put_nowait(incoming)

    def _on_stopped(self, *_: object) -> None:
        self._inbox.put_nowait(None)  # wakes __anext__: the channel closed or RabbitMQ cancelled us

    def __aiter__(self) -> AmqpSubscription:
        return self

    async def __anext__(self) -> AmqpDelivery:
        if not self.is_closed:
            incoming = await self._inbox.get()
            if incoming is not None and not self.is_closed:
                return AmqpDelivery(self, incoming)
            self._inbox.put_nowait(None)  # for any other waiter
        if self._closing:
            raise StopAsyncIteration
        raise BrokerError(f"amqp: RabbitMQ stopped {self._service!r}'s consumer or its channel")

    async def retry(
        self, incoming: AbstractIncomingMessage, message: Message, reason: str, *, again: bool
    ) -> None:
        if again and message.attempts < self._max_attempts:
            await self._broker.requeue(
                self._service, _copy(incoming, message, attempts=message.attempts + 1)
            )
        else:
            await self._broker.bury(
                self._service, _copy(incoming, message, attempts=message.attempts, reason=reason)
            )

    async def close(self) -> None:
        """Close the channel: RabbitMQ requeues every unacknowledged delivery, buffered ones too."""
        if self._closing:
            return
        self._closing = True
        self._broker.forget(self)
        if not self._channel.is_closed:
            with _translated(f"closing {self._service!r}'s subscription"):
                await self._channel.close()
        self._inbox.put_nowait(None)


class AmqpListener(QueueListener):
    """A server-named queue bound to one channel name, consumed with no-ack on its own channel."""

    def __init__(self, broker: AmqpBroker, channel: AbstractChannel) -> None:
        super().__init__()
        self._broker = broker
        self._channel = channel
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        channel.close_callbacks.add(self._on_stopped)

    @property
    def queue_name(self) -> str | None:
        return self._queue.name if self._queue else None

    async def start(self, exchange: str, name: str) -> None:
        with _translated(f"listening to {name!r}"):
            self._queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
            await self._queue.bind(exchange, routing_key=name)
            underlay = await self._channel.get_underlay_channel()
            underlay.on_consumer_cancel_callbacks.add(self._on_stopped)  # e.g. its queue deleted
            self._consumer_tag = await self._queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, incoming: AbstractIncomingMessage) -> None:
        self.put(incoming.body)

    def _on_stopped(self, *_: object) -> None:
        self.end(BrokerError("amqp: RabbitMQ stopped a broadcast listener or its channel"))

    async def _release(self) -> None:
        """Cancel, then delete the queue rather than leave it to auto-delete, which RabbitMQ does
        after answering the cancel: so the queue is gone when close() returns."""
        self._broker.forget(self)
        if not self._channel.is_closed:
            with _translated("closing a broadcast listener"):
                if self._queue is not None:
                    if self._consumer_tag is not None:
                        await self._queue.cancel(self._consumer_tag)
                    await self._queue.delete(if_unused=False, if_empty=False)
                await self._channel.close()


class AmqpBroker:
    def __init__(self, url: str, *, namespace: str = "wirelab") -> None:
        self._url = url
        self._ns = namespace
        self._connection: AbstractConnection | None = None
        self._publishing: dict[bool, AbstractChannel] = {}  # by whether it confirms
        self._publishing_lock = asyncio.Lock()
        self._services: set[str] = set()
        self._consumers: set[AmqpSubscription | AmqpListener] = set()  # closed with the broker

    @property
    def namespace(self) -> str:
        return self._ns

    async def connect(self) -> None:
        host = urlsplit(self._url).netloc.rpartition("@")[2]  # errors must never show the password
        with _translated(f"connecting to {host}"):
            self._connection = await aio_pika.connect(self._url)
        async with self._channel(f"declaring the exchanges of {self._ns!r}") as channel:
            await channel.declare_exchange(self._ns, aio_pika.ExchangeType.TOPIC, durable=True)
            await channel.declare_exchange(self._dlx, aio_pika.ExchangeType.DIRECT, durable=True)
            await channel.declare_exchange(self._broadcasts, aio_pika.ExchangeType.DIRECT, durable=True)

    async def close(self) -> None:
        for consumer in list(self._consumers):
            with contextlib.suppress(BrokerError):  # a dead connection has nothing left to close
                await consumer.close()
        if self._connection is not None and not self._connection.is_closed:
            await self._connection.close()

    async def publish(self, topic: str, body: bytes, *, headers: Mapping[str, str] | None = None) -> str:
        message_id = uuid.uuid4().hex
        message = aio_pika.Message(
            body,
            headers=dict(headers or {}),
            message_id=message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self._send(self._ns, topic, message, mandatory=False)  # no subscriber yet is no error
        return message_id

    async def declare(self, service: str, topics: Sequence[str]) -> None:
        queue_name = self._queue(service)
        arguments: FieldTable = {"x-dead-letter-exchange": self._dlx, "x-dead-letter-routing-key": service}
        async with self._channel(f"declaring {queue_name!r}") as channel:
            queue = await channel.declare_queue(queue_name, durable=True, arguments=arguments)
            for topic in topics:
                await queue.bind(self._ns, routing_key=topic)
            dead = await channel.declare_queue(f"{queue_name}.dead", durable=True)
            await dead.bind(self._dlx, routing_key=service)
            if service not in self._services:  # once per broker; destroy() in any process reads it
                await channel.declare_queue(self._catalog, durable=True)
                entry = aio_pika.Message(service.encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
                await self._send("", self._catalog, entry, mandatory=True)
                self._services.add(service)

    async def subscribe(
        self, service: str, topics: Sequence[str], *, prefetch: int = 16, max_attempts: int = 5
    ) -> AmqpSubscription:
        if prefetch < 1 or max_attempts < 1:
            raise ValueError("prefetch and max_attempts must be at least 1")
        await self.declare(service, topics)
        with _translated(f"opening a channel for {service!r}"):
            channel = await self._open().channel()
        subscription = AmqpSubscription(self, service, channel, max_attempts)
        self._consumers.add(subscription)
        try:
            await subscription.start(self._queue(service), prefetch)
        except BrokerError:
            await subscription.close()
            raise
        return subscription

    async def dead_letters(self, service: str) -> list[DeadLetter]:
        """Take each dead letter without acknowledging it, then give them all back, in order."""
        letters: list[DeadLetter] = []
        async with self._channel(f"reading {service!r}'s dead letters") as channel:
            taken = await self._take_dead(channel, service)
            for incoming in taken:
                message = _decode(incoming, redelivered=False)  # listing them is no attempt
                reason = incoming.headers.get(REASON) or _first_death(incoming.headers).get("reason")
                letters.append(DeadLetter(service, message, _text(reason or "unknown")))
            if taken:
                await taken[-1].nack(multiple=True, requeue=True)
        return letters

    async def replay(self, service: str) -> int:
        """Each dead letter goes back with attempts 1, confirmed, before it leaves the dead queue."""
        count = 0
        async with self._channel(f"replaying {service!r}'s dead letters") as channel:
            for incoming in await self._take_dead(channel, service):
                await self.requeue(
                    service, _copy(incoming, _decode(incoming, redelivered=False), attempts=1)
                )
                await incoming.ack()
                count += 1
        return count

    async def broadcast(self, channel: str, body: bytes) -> None:
        message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT)
        await self._send(self._broadcasts, channel, message, mandatory=False, confirmed=False)

    async def listen(self, channel: str) -> AmqpListener:
        with _translated(f"opening a channel to listen to {channel!r}"):
            amqp_channel = await self._open().channel()
        listener = AmqpListener(self, amqp_channel)
        self._consumers.add(listener)
        try:
            await listener.start(self._broadcasts, channel)
        except BrokerError:
            await listener.close()
            raise
        return listener

    async def destroy(self) -> None:
        for consumer in list(self._consumers):
            await consumer.close()
        async with self._channel(f"destroying namespace {self._ns!r}") as channel:
            services = set(self._services)
            catalog = await channel.declare_queue(self._catalog, durable=True)
            while (entry := await catalog.get(fail=False)) is not None:
                services.add(entry.body.decode())
            for service in services:
                await channel.queue_delete(self._queue(service))
                await channel.queue_delete(f"{self._queue(service)}.dead")
            await channel.queue_delete(self._catalog)
            await channel.exchange_delete(self._ns)
            await channel.exchange_delete(self._dlx)
            await channel.exchange_delete(self._broadcasts)
        self._services.clear()

    # Used by subscriptions, listeners and deliveries.

    def forget(self, consumer: AmqpSubscription | AmqpListener) -> None:
        self._consumers.discard(consumer)

    async def requeue(self, service: str, message: aio_pika.Message) -> None:
        await self._send("", self._queue(service), message, mandatory=True)

    async def bury(self, service: str, message: aio_pika.Message) -> None:
        await self._send(self._dlx, service, message, mandatory=True)

    # Plumbing.

    @property
    def _dlx(self) -> str:
        return f"{self._ns}.dlx"

    @property
    def _broadcasts(self) -> str:
        return f"{self._ns}.broadcast"

    @property
    def _catalog(self) -> str:
        return f"{self._ns}:services"

    def _queue(self, service: str) -> str:
        return f"{self._ns}.{service}"

    def _open(self) -> AbstractConnection:
        if self._connection is None or self._connection.is_closed:
            raise BrokerError("amqp: not connected (call connect() first)")
        return self._connection

    async def _send(
        self,
        exchange: str,
        routing_key: str,
        message: aio_pika.Message,
        *,
        mandatory: bool,
        confirmed: bool = True,
    ) -> None:
        """Publish to `exchange` ("" is the default one) and, if `confirmed`, wait for the confirm;
        a nack, a return (unroutable while `mandatory`) or a lost connection raises BrokerError."""
        with _translated(f"publishing to {exchange!r} with routing key {routing_key!r}"):
            channel = await self._publisher(confirmed)
            target = (
                await channel.get_exchange(exchange, ensure=False) if exchange else channel.default_exchange
            )
            await target.publish(message, routing_key, mandatory=mandatory)

    async def _publisher(self, confirmed: bool) -> AbstractChannel:
        """The channel every publish (`confirmed`) or every broadcast shares, reopened if RabbitMQ
        closed it on an error (a publish to an exchange someone deleted), so that one such error
        is not forever."""
        async with self._publishing_lock:
            channel = self._publishing.get(confirmed)
            if channel is None or channel.is_closed:
                channel = self._publishing[confirmed] = await self._open().channel(
                    publisher_confirms=confirmed, on_return_raises=confirmed
                )
            return channel

    @contextlib.asynccontextmanager
    async def _channel(self, doing: str) -> AsyncIterator[AbstractChannel]:
        """A short-lived channel, so that a refused declaration never closes the publishing one."""
        with _translated(doing):
            async with self._open().channel() as channel:
                yield channel

    async def _take_dead(self, channel: AbstractChannel, service: str) -> list[AbstractIncomingMessage]:
        """Every ready dead letter of `service`, unacknowledged, on `channel`; none if no queue."""
        try:
            dead = await channel.declare_queue(f"{self._queue(service)}.dead", passive=True)
        except ChannelNotFoundEntity:
            return []
        taken: list[AbstractIncomingMessage] = []
        while (incoming := await dead.get(fail=False)) is not None:
            taken.append(incoming)
        return taken

"""The broker contract over Redis Streams and consumer groups (redis-py asyncio; Redis 7.0 or later).

Theory of operation. Every key lives under the namespace `{ns}`:

    {ns}:topic:{topic}      stream: each message published to `topic`, stored once
    {ns}:topics:{service}   set: the topics `service` declared
    {ns}:retry:{service}    stream: the service's redeliveries, which no other service reads
    {ns}:dead:{service}     stream: the service's dead letters, each with its `reason`

A service is a consumer group on each stream it reads, created at `$` on its topics' streams, so
that `declare` keeps whatever is published from then on, and at `0` on its retry stream. Each group
has its own cursor over a topic stream, which is the fan-out; each entry goes to one consumer of the
group, which is the work queue. A subscription is one consumer (a random name) reading the retry
stream, then the stream of every topic its service declared (the set is read again before each
take, so later declarations count): one queue per service, as in the embedded broker.

An entry has the fields `id` (ours, so that it survives redelivery), `topic`, `body`, `attempts` and
`headers` (a JSON object of strings). Only `body` is required: another producer may
`XADD {ns}:topic:t * body hello`, and the entry id, the stream's topic, 1 and {} fill in the rest.
A malformed entry goes to the dead letters. Publishing to a topic nobody declared stores nothing
(NOMKSTREAM), as a fan-out exchange without queues drops it.

A redelivery is never added to a topic stream, since every service reads those. A nack copies
the entry to the service's retry stream with attempts + 1 and acknowledges the original, or, after
the last attempt, copies it to the dead stream with the reason. One Lua script does it atomically
and only if this consumer still holds the entry, so a consumer that lost an entry cannot duplicate
it. Closing a subscription hands its unsettled entries back the same way; `replay` moves dead
letters back to the retry stream with attempts 1.

Prefetch: XREADGROUP's COUNT bounds each stream, not the call, so a second script reads the streams
one by one with the room left. With nothing to take, the subscription waits in a plain XREAD BLOCK
after each stream's last entry: XREAD takes nothing, so a waiting consumer holds nothing it cannot
start. BLOCK lasts a second at most (half the visibility timeout if shorter), which lets `close()`
end readers without cancelling them and paces the reclaiming below.

A killed consumer leaves its entries pending in the group. Looking for work, a subscription claims
(XAUTOCLAIM), every half visibility timeout, what has been pending longer than `visibility_timeout`
and redelivers it like a nack: attempts + 1, or a dead letter after the last attempt. The price of
a timeout: an entry a living consumer holds for longer is redelivered too, and that consumer's late
ack does not stop it.

Acknowledged entries stay in the topic streams (Redis 7.0 cannot trim "acknowledged by every
group"), until `destroy()` deletes every key of the namespace.

Broadcasts are plain pub/sub, which stores nothing, as a hint should not: `broadcast` PUBLISHes
to the channel `{ns}:broadcast:{channel}` (a channel, not a key: `destroy()` has nothing to
delete), and each listener SUBSCRIBEs on a connection of its own. `listen()` returns once Redis
confirmed the SUBSCRIBE, so every later broadcast reaches it. A task per listener drains that
connection into the listener's backlog, so a slow reader loses old hints (see listener.py) instead
of being disconnected by Redis's pub/sub output-buffer limit. A lost connection ends the listener
with BrokerError, as on RabbitMQ: the broadcasts made meanwhile are gone, so its owner should know
to read the store and listen again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT, KeyT, StreamIdT

from wirelab.errors import ConfigError
from wirelab.pubsub.broker import BrokerError, DeadLetter, Message
from wirelab.pubsub.listener import QueueListener

__all__ = ["RedisBroker", "RedisDelivery", "RedisListener", "RedisSubscription"]

Fields = dict[bytes, bytes]
Entry = tuple[str, bytes, Fields]  # stream key, entry id, fields
Tails = dict[KeyT, StreamIdT]  # stream key, its last entry id: where to wait for the next one

# KEYS: the streams in reading order. ARGV: group, consumer, room. Returns the entries taken from
# each stream and each stream's last entry id, after which a plain XREAD can wait.
_TAKE = """
local room, taken, tails = tonumber(ARGV[3]), {}, {}
for i, key in ipairs(KEYS) do
    taken[i] = {}
    if room > 0 then
        local reply = redis.call(
            'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', room, 'STREAMS', key, '>')
        if reply then taken[i] = reply[1][2] end
        room = room - #taken[i]
    end
    local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    tails[i] = last[1] and last[1][1] or '0-0'
end
return {taken, tails}
"""

# KEYS: source stream, target stream. ARGV: entry id, group, consumer, then field, value, ...
# With a group, only if the consumer still holds the entry, which is then acknowledged; without
# one (dead letters), only if the entry is still there, which is then deleted. Returns 1 if moved.
_MOVE = """
if ARGV[2] == '' then
    if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
else
    if #redis.call('XPENDING', KEYS[1], ARGV[2], ARGV[1], ARGV[1], 1, ARGV[3]) == 0 then return 0 end
    redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
end
redis.call('XADD', KEYS[2], '*', unpack(ARGV, 4))
return 1
"""


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """Redis failures leave this module as the contract's BrokerError."""
    try:
        yield
    except RedisError as exc:
        raise BrokerError(f"redis: {exc}") from exc


def _encode(message: Message, reason: str | None = None) -> dict[FieldT, EncodableT]:
    fields: dict[FieldT, EncodableT] = {
        "id": message.id,
        "topic": message.topic,
        "body": message.body,
        "attempts": str(message.attempts),
        "headers": json.dumps(dict(message.headers)),
    }
    return fields if reason is None else fields | {"reason": reason}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _decode(fields: Fields, entry_id: bytes, topic: str) -> Message:
    """Raises ValueError (JSON, Unicode and int errors are ValueErrors) on a malformed entry."""
    headers = json.loads(fields.get(b"headers", b"{}"))
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ValueError("headers must be a JSON object of strings")
    return Message(
        topic=fields[b"topic"].decode() if b"topic" in fields else topic,
        body=fields.get(b"body", b""),
        id=fields.get(b"id", entry_id).decode(),
        attempts=int(fields.get(b"attempts", b"1")),
        headers=headers,
    )


class _Redis:
    """The client, the key names and every command sent, each translated to BrokerError."""

    def __init__(self, client: Redis, namespace: str, visibility_timeout: float) -> None:
        self.client = client
        self.namespace = namespace
        self.visibility_timeout = visibility_timeout
        self.block_ms = int(min(1.0, visibility_timeout / 2) * 1000)
        self._take = client.register_script(_TAKE)
        self._move = client.register_script(_MOVE)

    def key(self, kind: str, name: str) -> str:
        return f"{self.namespace}:{kind}:{name}"

    async def declare(self, service: str, topics: Sequence[str]) -> None:
        """Groups first, then the set, so that no reader finds a topic stream without its group."""
        with _translated():
            await self._group(self.key("retry", service), service, "0")
            for topic in topics:
                await self._group(self.key("topic", topic), service, "$")
            if topics:
                await self.client.sadd(self.key("topics", service), *topics)

    async def _group(self, stream: str, group: str, start: str) -> None:
        try:
            await self.client.xgroup_create(stream, group, id=start, mkstream=True)
        except ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise

    async def streams(self, service: str) -> dict[str, str]:
        """What a consumer of `service` reads, retries first, each stream with its topic."""
        with _translated():
            members = await self.client.smembers(self.key("topics", service))
        topics = sorted(_text(member) for member in members)
        return {self.key("retry", service): "", **{self.key("topic", t): t for t in topics}}

    async def take(
        self, streams: Sequence[str], group: str, consumer: str, room: int
    ) -> tuple[list[Entry], Tails]:
        with _translated():
            taken, tails = await self._take(keys=streams, args=[group, consumer, room])
        entries = [
            (stream, entry_id, dict(zip(flat[::2], flat[1::2], strict=True)))
            for stream, batch in zip(streams, taken, strict=True)
            for entry_id, flat in batch
        ]
        return entries, dict(zip(streams, tails, strict=True))

    async def wait(self, tails: Tails) -> None:
        """Until an entry lands after `tails`, or `block_ms`; takes nothing."""
        with _translated():
            await self.client.xread(tails, count=1, block=self.block_ms)

    async def claim(self, stream: str, group: str, consumer: str) -> list[Entry]:
        idle_ms = int(self.visibility_timeout * 1000)
        with _translated():
            reply = await self.client.xautoclaim(stream, group, consumer, idle_ms, count=100)
        return [(stream, entry_id, fields) for entry_id, fields in reply[1]]

    async def ack(self, stream: str, group: str, entry_id: bytes) -> None:
        with _translated():
            await self.client.xack(stream, group, entry_id)

    async def move(
        self,
        source: str,
        entry_id: bytes,
        target: str,
        fields: Mapping[FieldT, EncodableT],
        owner: tuple[str, str],
    ) -> bool:
        """Atomically: copy to `target`; settle the original if the (group, consumer) `owner` holds
        it, or, with an empty owner, delete it if it is still there."""
        flat = [item for pair in fields.items() for item in pair]
        with _translated():
            return bool(await self._move(keys=[source, target], args=[entry_id, *owner, *flat]))

    async def entries(self, stream: str) -> list[tuple[bytes, Fields]]:
        with _translated():
            entries = await self.client.xrange(stream)
        return cast(list[tuple[bytes, Fields]], entries)  # bytes: the client decodes nothing

    async def forget(self, streams: Sequence[str], group: str, consumer: str) -> None:
        """Drop a closed consumer from the groups where it holds nothing. Where it still holds
        something (a take whose reply was lost), deleting it would make that unclaimable."""
        with _translated():
            for stream in streams:
                if not await self.client.xpending_range(stream, group, "-", "+", 1, consumer):
                    await self.client.xgroup_delconsumer(stream, group, consumer)

    async def destroy(self) -> None:
        pattern = re.sub(r"([*?\[\]\\])", r"\\\1", self.namespace) + ":*"
        with _translated():
            keys = [key async for key in self.client.scan_iter(match=pattern, count=1000)]
            if keys:
                await self.client.unlink(*keys)


class RedisDelivery:
    """One entry handed to the application, settled once by `ack` or `nack`."""

    __slots__ = ("_settled", "_subscription", "entry_id", "message", "stream")

    def __init__(
        self, subscription: RedisSubscription, stream: str, entry_id: bytes, message: Message
    ) -> None:
        self._subscription = subscription
        self._settled = False
        self.stream = stream
        self.entry_id = entry_id
        self.message = message

    async def ack(self) -> None:
        self._settle()
        await self._subscription.settle(self, None)

    async def nack(self, reason: str, *, retry: bool = True) -> None:
        self._settle()
        await self._subscription.settle(self, reason, retry=retry)

    def _settle(self) -> None:
        if self._settled:
            raise BrokerError(f"message {self.message.id} was already acknowledged or rejected")
        self._settled = True


class RedisSubscription:
    """One consumer in the service's group; never holds more than `prefetch` entries."""

    def __init__(
        self,
        redis: _Redis,
        service: str,
        *,
        prefetch: int,
        max_attempts: int,
        on_close: Callable[[RedisSubscription], None],
    ) -> None:
        self._redis = redis
        self._service = service
        self._consumer = f"{service}-{secrets.token_hex(6)}"
        self._prefetch = prefetch
        self._max_attempts = max_attempts
        self._on_close = on_close
        self._streams: dict[str, str] = {}
        self._ready: deque[Entry] = deque()  # taken, not yet handed out
        self._unacked: set[RedisDelivery] = set()
        self._taking: asyncio.Future[Tails] | None = None
        self._room = asyncio.Event()
        self._next_reclaim = 0.0
        self._closed = False

    def __aiter__(self) -> RedisSubscription:
        return self

    async def __anext__(self) -> RedisDelivery:
        while not self._closed:
            if self._ready:
                delivery = await self._deliver(*self._ready.popleft())
                if delivery is not None:
                    return delivery
            elif len(self._unacked) >= self._prefetch:
                self._room.clear()
                await self._room.wait()
            else:
                await self._fill()
        raise StopAsyncIteration

    async def _fill(self) -> None:
        """Take what there is room for; with nothing to take, wait for a new entry.

        The taking runs as a shielded task, so that a reader cancelled meanwhile (a timeout)
        still finds what was taken in `_ready`, instead of leaving it pending and unseen."""
        if self._taking is None:
            self._taking = asyncio.ensure_future(self._take())
        taking = self._taking
        try:
            tails = await asyncio.shield(taking)
        finally:
            if taking.done():
                self._taking = None
        try:
            if tails and not self._closed:
                await self._redis.wait(tails)
        except BrokerError:
            if not self._closed:  # else the broker closed the client under a waiting reader
                raise

    async def _take(self) -> Tails:
        """Reclaim when due, then take; where to wait from if nothing was taken. The service's
        topics are read again each time, so that a subscription follows later declarations."""
        if self._closed:
            return {}
        self._streams = await self._redis.streams(self._service)
        if time.monotonic() >= self._next_reclaim:
            await self._reclaim()
        room = self._prefetch - len(self._unacked) - len(self._ready)
        if self._closed or room < 1:
            return {}
        entries, tails = await self._redis.take(list(self._streams), self._service, self._consumer, room)
        self._ready.extend(entries)
        return {} if entries else tails

    async def _reclaim(self) -> None:
        """Redeliver what consumers silent for the visibility timeout hold: killed, or too slow."""
        self._next_reclaim = time.monotonic() + self._redis.visibility_timeout / 2
        for stream in self._streams:
            for _, entry_id, fields in await self._redis.claim(stream, self._service, self._consumer):
                message = await self._parse(stream, entry_id, fields)
                if message is not None:
                    await self._retry(stream, entry_id, message, "not acknowledged in time")

    async def _deliver(self, stream: str, entry_id: bytes, fields: Fields) -> RedisDelivery | None:
        message = await self._parse(stream, entry_id, fields)
        if message is None:
            return None
        delivery = RedisDelivery(self, stream, entry_id, message)
        self._unacked.add(delivery)
        return delivery

    async def _parse(self, stream: str, entry_id: bytes, fields: Fields) -> Message | None:
        """The entry's message; a malformed entry goes to the dead letters instead."""
        topic = self._streams.get(stream, "")
        try:
            return _decode(fields, entry_id, topic)
        except ValueError as exc:
            junk = Message(topic, fields.get(b"body", b""), entry_id.decode())
            await self._move(stream, entry_id, "dead", junk, f"malformed entry: {exc}")
            return None

    async def settle(self, delivery: RedisDelivery, reason: str | None, *, retry: bool = True) -> None:
        if delivery not in self._unacked:
            return  # close() handed it back already
        try:
            if reason is None:
                await self._redis.ack(delivery.stream, self._service, delivery.entry_id)
            else:
                await self._retry(delivery.stream, delivery.entry_id, delivery.message, reason, retry)
        finally:
            self._unacked.discard(delivery)
            self._room.set()

    async def _retry(
        self, stream: str, entry_id: bytes, message: Message, reason: str, retry: bool = True
    ) -> None:
        """One more attempt; after the last one (or at once, without retry), a dead letter."""
        if not retry or message.attempts >= self._max_attempts:
            await self._move(stream, entry_id, "dead", message, reason)
        else:
            await self._move(stream, entry_id, "retry", _again(message))

    async def _move(
        self, stream: str, entry_id: bytes, kind: str, message: Message, reason: str | None = None
    ) -> None:
        target = self._redis.key(kind, self._service)
        owner = (self._service, self._consumer)
        await self._redis.move(stream, entry_id, target, _encode(message, reason), owner)

    async def close(self) -> None:
        """Stop; delivered but unsettled entries go back one attempt later, taken but undelivered
        ones as they were. What a running take brings in is handed back too."""
        if self._closed:
            return
        self._closed = True
        self._room.set()
        self._on_close(self)
        if self._taking is not None:
            with contextlib.suppress(BrokerError):
                await self._taking
        held, self._unacked = self._unacked, set()
        for delivery in held:
            await self._move(delivery.stream, delivery.entry_id, "retry", _again(delivery.message))
        while self._ready:
            stream, entry_id, fields = self._ready.popleft()
            message = await self._parse(stream, entry_id, fields)
            if message is not None:
                await self._move(stream, entry_id, "retry", message)
        await self._redis.forget(list(self._streams), self._service, self._consumer)


class RedisListener(QueueListener):
    """Owns a pub/sub connection, subscribed to one channel, and the task that reads it."""

    def __init__(self, pubsub: PubSub, on_close: Callable[[RedisListener], None]) -> None:
        super().__init__()
        self._pubsub = pubsub
        self._on_close = on_close
        self._reader: asyncio.Task[None] | None = None

    async def start(self, name: str) -> None:
        """Subscribe and read Redis's confirmation: from then on, every PUBLISH reaches us."""
        with _translated():
            await self._pubsub.subscribe(name)
            await self._pubsub.get_message(timeout=None)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                message = await self._pubsub.get_message(timeout=None)
                if message is not None and message["type"] == "message":
                    self.put(message["data"])
        except RedisError as exc:
            self.end(BrokerError(f"redis: a broadcast listener lost its connection: {exc}"))
            await self._aclose()  # redis-py may have reconnected it already: hold nothing

    async def _aclose(self) -> None:
        """Disconnect: Redis forgets the subscription with the connection."""
        await _close_pubsub(self._pubsub)

    async def _release(self) -> None:
        self._on_close(self)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait([self._reader])  # not `await`: no CancelledError to suppress
        await self._aclose()


# Some redis-py releases annotate PubSub.aclose and some do not: naming its type here keeps our calls
# typed either way, with no `type: ignore` that one release needs and the next reports as unused.
_close_pubsub: Callable[[PubSub], Awaitable[None]] = PubSub.aclose


def _again(message: Message) -> Message:
    return dataclasses.replace(message, attempts=message.attempts + 1)


def _visibility_from(url: str, default: float) -> tuple[str, float]:
    """`redis://host/0?visibility_timeout=5` sets how soon a dead consumer's messages are reclaimed
    (every `wirelab` command takes the broker as one URL); the option is ours, so Redis never sees it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = [value for key, value in query if key == "visibility_timeout"]
    if not ours:
        return url, default
    try:
        seconds = float(ours[-1])
    except ValueError:
        raise ConfigError(
            f"broker: visibility_timeout must be a number of seconds, not {ours[-1]!r}"
        ) from None
    rest = urlencode([(key, value) for key, value in query if key != "visibility_timeout"])
    return urlunsplit(parts._replace(query=rest)), seconds


class RedisBroker:
    """The broker contract over Redis Streams; the module docstring maps one onto the other."""

    def __init__(self, url: str, *, namespace: str = "wirelab", visibility_timeout: float = 30.0) -> None:
        url, visibility_timeout = _visibility_from(url, visibility_timeout)
        if visibility_timeout <= 0:
            raise ConfigError(f"broker: visibility_timeout must be positive, not {visibility_timeout}")
        self._url = url
        self._namespace = namespace
        self._visibility_timeout = visibility_timeout
        self._redis: _Redis | None = None
        self._subscriptions: set[RedisSubscription] = set()
        self._listeners: set[RedisListener] = set()

    @property
    def _connected(self) -> _Redis:
        if self._redis is None:
            raise BrokerError("the Redis broker is not connected: call connect() first")
        return self._redis

    async def connect(self) -> None:
        # No socket_timeout (redis-py 8 defaults to 5 s): with one, redis-py sends through
        # asyncio.wait_for, which on Python 3.11 can swallow a cancellation (cpython#86296), and a
        # reader under asyncio.timeout would then read on. A URL's ?socket_timeout= still wins.
        client = Redis.from_url(self._url, socket_timeout=None)
        try:
            with _translated():
                await client.ping()
        except BrokerError:
            await client.aclose()
            raise
        self._redis = _Redis(client, self._namespace, self._visibility_timeout)

    async def close(self) -> None:
        """Close every subscription (handing back what it holds) and listener, then the client."""
        for subscription in list(self._subscriptions):
            await subscription.close()
        for listener in list(self._listeners):
            await listener.close()
        if self._redis is not None:
            await self._redis.client.aclose()
            self._redis = None

    async def publish(self, topic: str, body: bytes, *, headers: Mapping[str, str] | None = None) -> str:
        """Durable once Redis answered the XADD (as durable as the server's persistence settings)."""
        message = Message(topic, body, uuid.uuid4().hex, 1, dict(headers or {}))
        redis = self._connected
        with _translated():
            await redis.client.xadd(redis.key("topic", topic), _encode(message), nomkstream=True)
        return message.id

    async def declare(self, service: str, topics: Sequence[str]) -> None:
        await self._connected.declare(service, topics)

    async def subscribe(
        self, service: str, topics: Sequence[str], *, prefetch: int = 16, max_attempts: int = 5
    ) -> RedisSubscription:
        if prefetch < 1 or max_attempts < 1:
            raise ValueError("prefetch and max_attempts must be at least 1")
        await self.declare(service, topics)
        subscription = RedisSubscription(
            self._connected,
            service,
            prefetch=prefetch,
            max_attempts=max_attempts,
            on_close=self._subscriptions.discard,
        )
        self._subscriptions.add(subscription)
        return subscription

    async def dead_letters(self, service: str) -> list[DeadLetter]:
        redis = self._connected
        return [
            DeadLetter(service, _decode(fields, entry_id, ""), fields.get(b"reason", b"").decode())
            for entry_id, fields in await redis.entries(redis.key("dead", service))
        ]

    async def replay(self, service: str) -> int:
        """Each dead letter moves atomically, so concurrent replays never duplicate one."""
        redis = self._connected
        dead, retry = redis.key("dead", service), redis.key("retry", service)
        moved = 0
        for entry_id, fields in await redis.entries(dead):
            message = dataclasses.replace(_decode(fields, entry_id, ""), attempts=1)
            moved += await redis.move(dead, entry_id, retry, _encode(message), ("", ""))
        return moved

    async def broadcast(self, channel: str, body: bytes) -> None:
        redis = self._connected
        with _translated():
            await redis.client.publish(redis.key("broadcast", channel), body)

    async def listen(self, channel: str) -> RedisListener:
        redis = self._connected
        listener = RedisListener(redis.client.pubsub(), self._listeners.discard)
        self._listeners.add(listener)
        try:
            await listener.start(redis.key("broadcast", channel))
        except BrokerError:
            await listener.close()
            raise
        return listener

    async def destroy(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        for listener in list(self._listeners):
            await listener.close()
        await self._connected.destroy()

"""The feed: every followable thing (a job, the logins topic) is a topic with a versioned event log.

Theory of operation: `publish` makes an entry durable in the store, then appends it to the topic's
in-memory log and wakes everyone waiting on that topic. Readers never get pushed a queue of their own:
each holds a cursor (the last version it delivered) and pulls what is newer, from memory while it is
retained and from the store after that. So a subscriber costs one cursor, whatever the traffic, and
every transport built on `read`, `wait` and `follow` delivers the same versions in the same order and
resumes from any version with nothing lost or repeated.

Several processes may share one store (instances of a stateless API). Versions are then assigned
by the store: a commit whose version another instance took first (VersionConflict) catches up from
the store and tries again with the next one. `on_commit` tells the others (a broadcast) and
`refresh` is how an instance hears them: it reads what is new in the store and wakes its readers.

A follower that falls more than `max_lag` versions behind the head (a client that stopped reading while
its socket buffers are full) is dropped with `Lagged`, which carries the version to resume from.

Fan-out fast path: a follower may also offer `push`, a synchronous "write this now if you can". While
it is caught up and asleep, `publish` hands it the new entry directly and does not wake its task at
all; only if `push` declines (the socket is busy) does the task wake and pull as usual. So an idle
subscriber costs one function call per event instead of a task switch. A `subscribe`d follower goes
one step further and has no task at all while caught up: one is started only to pull, and it ends
once the follower has caught up again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from wirelab.errors import WirelabError
from wirelab.feed.log import Entry, TopicClosed, TopicLog, Trimmed
from wirelab.feed.store import EventStore, VersionConflict
from wirelab.proto.idempotency import Completion

__all__ = ["Change", "Completes", "Deliver", "Ended", "Feed", "Lagged", "Push", "Subscription"]

Deliver = Callable[[Entry], Awaitable[None]]
Push = Callable[[Entry], bool]
Ended = Callable[["Subscription", BaseException | None], Awaitable[None]]
"""A subscription ended: None when nothing more can come, else why (see `Feed.subscribe`)."""
MakeData = Callable[[int], Mapping[str, Any]]
Change = tuple[str, MakeData, bool]
"""A new event: its name, its data given the version, and whether it is final."""
Completes = Callable[[Entry], Completion | None]

READ_PAGE = 256
"""Entries read at a time; a follower far behind catches up a page per read."""


class Lagged(WirelabError):
    """A follower fell too far behind and was dropped; it may resume after `cursor`."""

    def __init__(self, topic: str, cursor: int) -> None:
        super().__init__(f"{topic}: fell too far behind; resume after version {cursor}")
        self.topic = topic
        self.cursor = cursor


class _Follower:
    """A reader's cursor on a topic. While it rests (caught up), a new entry is pushed to it if it
    can take one synchronously; otherwise it is made to `pull`, a page at a time, in a task."""

    __slots__ = ("cursor", "lagged", "push", "task")

    def __init__(self, cursor: int, push: Push | None, task: asyncio.Task[Any] | None) -> None:
        self.cursor = cursor
        self.push = push
        self.task = task  # the task that pulls for it, if any
        self.lagged = False

    @property
    def reading(self) -> bool:
        """Busy pulling: it reads again before it rests, so it needs no offers."""
        raise NotImplementedError

    def pull(self) -> None:
        """Make it read what is new, unless it is reading already."""
        raise NotImplementedError

    def offer(self, entry: Entry) -> None:
        """A new entry exists: push it if we can, else have it pulled."""
        if self.reading:
            return
        caught_up = self.cursor == entry.version - 1
        if self.push is not None and caught_up and not entry.final and self.push(entry):
            self.cursor = entry.version
            return
        self.pull()

    def drop(self) -> None:
        """Too far behind: cancel the task pulling for it, which then raises Lagged."""
        self.lagged = True
        if self.task is not None:
            self.task.cancel()


class _Sleeper(_Follower):
    """A follower of `follow`: the caller's own task, asleep on `wakeup` while caught up."""

    __slots__ = ("wakeup",)

    def __init__(self, cursor: int, push: Push | None) -> None:
        super().__init__(cursor, push, asyncio.current_task())
        self.wakeup: asyncio.Future[None] | None = None

    @property
    def reading(self) -> bool:
        return self.wakeup is None

    def pull(self) -> None:
        if self.wakeup is not None and not self.wakeup.done():
            self.wakeup.set_result(None)


class Subscription(_Follower):
    """A follower of `Feed.subscribe`: no task of its own while caught up, one only to pull."""

    __slots__ = ("_feed", "_topic", "deliver", "on_end")

    def __init__(
        self, feed: Feed, topic: _Topic, cursor: int, deliver: Deliver, push: Push, on_end: Ended
    ) -> None:
        super().__init__(cursor, push, None)
        self._feed = feed
        self._topic = topic
        self.deliver = deliver
        self.on_end = on_end

    @property
    def topic(self) -> str:
        return self._topic.log.topic

    @property
    def reading(self) -> bool:
        return self.task is not None

    def pull(self) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._feed._pull(self._topic, self))

    def cancel(self) -> None:
        """Stop following (unsubscribe); `on_end` is not called."""
        self._feed._leave(self._topic, self)
        if self.task is not None:
            self.task.cancel()


class _Topic:
    __slots__ = ("changed", "followers", "lock", "log", "waiters")

    def __init__(self, log: TopicLog) -> None:
        self.log = log
        self.lock = asyncio.Lock()
        self.changed = asyncio.Event()
        self.waiters = 0
        self.followers: set[_Follower] = set()

    @property
    def idle(self) -> bool:
        return self.waiters == 0 and not self.followers


class Feed:
    def __init__(
        self,
        store: EventStore,
        *,
        retention: int = 256,
        max_lag: int = 1024,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[Entry], None] | None = None,
    ) -> None:
        self._store = store
        self._on_commit = on_commit
        self._retention = retention
        self._max_lag = max_lag
        self._clock = clock
        self._topics: dict[str, _Topic] = {}
        self._loading: dict[str, asyncio.Future[_Topic]] = {}
        self._closed = False

    # -- writing ---------------------------------------------------------------------------------

    async def publish(
        self,
        topic: str,
        event: str,
        make_data: MakeData,
        *,
        final: bool = False,
        completes: Completes | None = None,
    ) -> Entry:
        """Append one event; `make_data` receives the new version, so a snapshot can carry it.

        The store write and the in-memory append happen together even if the caller is cancelled
        half-way, so memory and store never disagree about a version. `completes` gives the answer
        of an idempotent request, stored in the same transaction as the entry.
        """
        entry = await self.update(topic, lambda latest: (event, make_data, final), completes=completes)
        assert entry is not None
        return entry

    async def update(
        self,
        topic: str,
        change: Callable[[Entry | None], Change | None],
        *,
        completes: Completes | None = None,
    ) -> Entry | None:
        """Append what `change` makes of the latest entry (None: nothing to append).

        `change` may run more than once: when another instance wrote first, it is asked again
        about the newer entry. So it must be a pure function of the entry it is given.
        """
        t = await self._topic(topic)
        head = t.log.head
        try:
            return await asyncio.shield(self._commit(t, change, completes))
        finally:  # a closed topic refuses (TopicClosed); it must not stay in memory for that
            self._announce_if_moved(t, head)
            self._evict_if_done(t)

    async def refresh(self, topic: str) -> None:
        """Another instance wrote to `topic`: take in what is new and wake its readers here."""
        t = self._topics.get(topic)
        if t is None:
            return  # nobody reads it here; it is loaded from the store when someone does
        head = t.log.head
        async with t.lock:
            await self._catch_up(t)
        self._announce_if_moved(t, head)
        self._evict_if_done(t)

    async def refresh_all(self) -> None:
        """Wake-ups may have been missed (a broker connection was lost): refresh every topic."""
        for topic in list(self._topics):
            await self.refresh(topic)

    async def _commit(
        self, t: _Topic, change: Callable[[Entry | None], Change | None], completes: Completes | None
    ) -> Entry | None:
        async with t.lock:
            while True:
                if t.log.closed:
                    raise TopicClosed(f"topic {t.log.topic!r} is closed")
                planned = change(t.log.latest())
                if planned is None:
                    return None
                event, make_data, final = planned
                version = t.log.next_version()
                data_json = json.dumps(make_data(version), separators=(",", ":"))
                entry = Entry(t.log.topic, version, event, data_json, self._clock(), final)
                try:
                    await self._store.append(entry, completes=completes(entry) if completes else None)
                except VersionConflict:
                    await self._catch_up(t)
                    continue
                t.log.append(entry)
                if self._on_commit is not None:
                    self._on_commit(entry)
                return entry

    async def _catch_up(self, t: _Topic) -> None:
        """Append to memory what other instances wrote to the store since our head (under t.lock)."""
        while not t.log.closed:
            entries = await self._store.read(t.log.topic, t.log.head, READ_PAGE)
            for entry in entries:
                t.log.append(entry)
            if len(entries) < READ_PAGE:
                return

    # -- reading ---------------------------------------------------------------------------------

    async def latest(self, topic: str) -> Entry | None:
        t = self._topics.get(topic)
        if t is not None:
            return t.log.latest()
        return await self._store.latest(topic)

    async def read(self, topic: str, after: int, *, limit: int = READ_PAGE) -> list[Entry]:
        """Entries newer than `after`, from memory while retained, else from the store."""
        return await self._read(await self._topic(topic), after, limit)

    async def _read(self, t: _Topic, after: int, limit: int) -> list[Entry]:
        try:
            return t.log.after(after, limit=limit)
        except Trimmed:
            return await self._store.read(t.log.topic, after, limit)

    async def wait(self, topic: str, after: int, seconds: float) -> Entry | None:
        """The latest entry once the topic passes `after`, or after `seconds` (long polling).

        A closed topic answers at once: nothing can follow its final entry.
        """
        t = await self._topic(topic)
        t.waiters += 1
        try:
            await self._wait_past(t, after, seconds)
        finally:
            t.waiters -= 1
            self._evict_if_done(t)
        return t.log.latest()

    async def follow(
        self,
        topic: str,
        after: int,
        deliver: Deliver,
        *,
        push: Push | None = None,
        idle: float | None = None,
        on_idle: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Deliver every entry after `after` in order until the topic closes or the feed does.

        Returns the last version delivered; following a closed topic from its final version (or
        later) returns at once. `push`, if given, delivers synchronously while the
        follower is caught up (see the module's docstring). `on_idle` runs after each `idle` seconds
        without news (heartbeats). Raises `Lagged` if the follower fell more than `max_lag`
        versions behind.
        """
        t = await self._topic(topic)
        me = _Sleeper(after, push)
        t.followers.add(me)
        try:
            return await self._pump(t, me, deliver, idle, on_idle)
        except asyncio.CancelledError:
            if not me.lagged:
                raise
            me.task.uncancel()  # type: ignore[union-attr]
            raise Lagged(topic, me.cursor) from None
        finally:
            self._leave(t, me)

    async def _pump(
        self,
        t: _Topic,
        me: _Sleeper,
        deliver: Deliver,
        idle: float | None,
        on_idle: Callable[[], Awaitable[None]] | None,
    ) -> int:
        while not await self._drain(t, me, deliver):
            if not await self._sleep(t, me, idle) and on_idle:
                await on_idle()
        return me.cursor

    async def subscribe(
        self, topic: str, after: int, deliver: Deliver, *, push: Push, on_end: Ended
    ) -> Subscription:
        """Deliver every entry after `after` in order, as `follow` does, but with no task while
        caught up: `push` takes each new entry as it is published, and a task runs only while
        there is something to pull (from `after` at first, or an entry `push` declined). So an
        idle subscriber costs one object instead of a task and its stack.

        `on_end` runs once, in that task, with the subscription and why it ended: None after the
        final entry or when the feed closes, Lagged when it fell more than `max_lag` versions
        behind, or what `deliver` raised. `cancel()` on the subscription ends it without `on_end`.
        """
        t = await self._topic(topic)
        me = Subscription(self, t, after, deliver, push, on_end)
        t.followers.add(me)
        me.pull()
        return me

    async def _pull(self, t: _Topic, me: Subscription) -> None:
        """Page a subscription up to the head; then it rests without a task again, or it ends."""
        reason: BaseException | None = None
        try:
            if not await self._drain(t, me, me.deliver):
                me.task = None  # caught up, and no await since the head was read: pushes resume
                return
        except asyncio.CancelledError:
            if not me.lagged:
                raise
            me.task.uncancel()  # type: ignore[union-attr]
            reason = Lagged(t.log.topic, me.cursor)
        except Exception as error:  # most likely the transport is gone; `on_end` tells
            reason = error
        self._leave(t, me)
        await me.on_end(me, reason)

    async def _drain(self, t: _Topic, me: _Follower, deliver: Deliver) -> bool:
        """Deliver the entries after the cursor a page at a time until caught up with the head;
        True if nothing more can come (the final entry was delivered, or the feed closed)."""
        while not self._closed:
            entries = await self._read(t, me.cursor, READ_PAGE)
            for entry in entries:
                await deliver(entry)
                me.cursor = entry.version
                if entry.final:
                    return True
            if me.cursor >= t.log.head:
                return t.log.closed
        return True

    async def _sleep(self, t: _Topic, me: _Sleeper, seconds: float | None) -> bool:
        """Sleep until offered something to pull; False if `seconds` passed first."""
        if t.log.head > me.cursor or self._closed:
            return True
        me.wakeup = asyncio.get_running_loop().create_future()
        try:
            if seconds is None:
                await me.wakeup
            else:
                async with asyncio.timeout(seconds):
                    await me.wakeup
        except TimeoutError:
            return False
        finally:
            me.wakeup = None
        return True

    # -- lifecycle and figures -------------------------------------------------------------------

    def close(self) -> None:
        """Release every waiter and follower: the server is going away."""
        self._closed = True
        for t in self._topics.values():
            t.changed.set()
            for follower in t.followers:
                follower.pull()

    def statistics(self) -> dict[str, int]:
        topics = self._topics.values()
        return {
            "topics": len(self._topics),
            "waiters": sum(t.waiters for t in topics),
            "followers": sum(len(t.followers) for t in topics),
        }

    # -- internals -------------------------------------------------------------------------------

    async def _wait_past(self, t: _Topic, after: int, seconds: float) -> None:
        """Wait until the head passes `after`, `seconds` pass, or nothing more can come."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while t.log.head <= after and not t.log.closed and not self._closed:
                    await t.changed.wait()

    def _announce(self, t: _Topic) -> None:
        """Wake the long polls; offer the new entry to each follower, dropping any that lag."""
        changed, t.changed = t.changed, asyncio.Event()
        changed.set()
        entry = t.log.latest()
        if entry is None:
            return
        for f in t.followers:
            f.offer(entry)
            if not f.lagged and entry.version - f.cursor > self._max_lag:
                f.drop()

    def _announce_if_moved(self, t: _Topic, head: int) -> None:
        """Wake readers only when the topic gained entries (a declined update, or a wake-up that
        brought nothing new, must not send every long poll round its loop again)."""
        if t.log.head != head:
            self._announce(t)

    def _leave(self, t: _Topic, me: _Follower) -> None:
        t.followers.discard(me)
        self._evict_if_done(t)

    def _evict_if_done(self, t: _Topic) -> None:
        """A closed topic nobody watches needs no memory; the store still has it."""
        if t.log.closed and t.idle and self._topics.get(t.log.topic) is t:
            del self._topics[t.log.topic]

    async def _topic(self, topic: str) -> _Topic:
        t = self._topics.get(topic)
        if t is not None:
            return t
        pending = self._loading.get(topic)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Topic] = asyncio.get_running_loop().create_future()
        self._loading[topic] = future
        try:
            last = await self._store.latest(topic)
            t = _Topic(TopicLog(topic, retention=self._retention, last=last))
            self._topics[topic] = t
            future.set_result(t)
            return t
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: the waiters, if any, re-raise it themselves
            raise
        finally:
            del self._loading[topic]

"""`wirelab bench pubsub`: messages per second through each broker, beside bare aio-pika.

Theory of operation. Every implementation is driven by the same code through the shape of the
broker contract (`Engine` below): the embedded broker, wirelab's RabbitMQ and Redis adapters (from
`open_broker`, each in a fresh namespace that `destroy()` removes at the end), and the peer,
`aio-pika-bare` (`wirelab.bench.pubsub_peer`), the loop one writes with aio-pika alone on the same
RabbitMQ. An engine that cannot be reached is skipped, and said so.

For each consumer count N, and within it each implementation in turn (so a drift of the machine
during the run spreads over all of them rather than landing on one), one row:

1. publish: one publisher publishes M messages of the same size to a fresh queue (declared first,
   so they wait for their consumers), awaiting each publish, that is each publisher confirm on
   RabbitMQ. publish_per_s = M / the time the loop took.
2. consume: N subscriptions, each its own consumer with the same prefetch, drain those M messages
   and acknowledge each. consume_per_s = M / (last acknowledgement - first delivery). Each body
   carries its sequence number, so the row also says how many never came and how many came twice.

Beside each rate, the CPU seconds this process spent per message (publisher, consumers and client
library together; the engine's own CPU is not counted): what the client side costs, which is where
an abstraction's price shows, and steadier than msg/s when the machine is busy with other work.

Then, per implementation, the latency of one stage hop: publish one message carrying the
`perf_counter_ns` of its send, receive it on one consumer (receive - send), acknowledge, and only
then publish the next; p50 and p99 go on the row with one consumer. A short run of hops first warms
every implementation's connection and code paths, unmeasured. The garbage collector is run before
each timed phase, so no phase pays for the garbage of the one before.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import struct
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar
from urllib.parse import urlsplit

from rich.console import Console
from rich.progress import Progress, TaskID

from wirelab.bench import runner
from wirelab.bench.report import Column, percentile, print_table, write_json
from wirelab.pubsub import BrokerError, Delivery, open_broker

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

__all__ = ["EMBEDDED", "IMPLS", "PEER", "Engine", "Inbox", "PubsubPlan", "run_pubsub", "summary"]

EMBEDDED, AMQP, REDIS, PEER = "embedded", "wirelab-amqp", "wirelab-redis", "aio-pika-bare"
IMPLS = (EMBEDDED, AMQP, REDIS, PEER)
GOAL_RATIO = 1.0
GOAL_EMBEDDED_PER_S = 200_000
CONNECT_S = 10.0
CLEANUP_S = 30.0
WARM_UP_HOPS = 50
_HEADER = struct.Struct("!QQ")  # sequence number, send time (perf_counter_ns)

COLUMNS = (
    Column("impl", "impl"),
    Column("consumers", "consumers"),
    Column("publish_per_s", "publish/s", ",.0f"),
    Column("consume_per_s", "consume/s", ",.0f"),
    Column("publish_cpu_us_per_msg", "pub CPU µs", ".0f"),
    Column("consume_cpu_us_per_msg", "con CPU µs", ".0f"),
    Column("hop_p50_ms", "hop p50 ms", ".3f"),
    Column("hop_p99_ms", "hop p99 ms", ".3f"),
    Column("missing", "missing", ","),
    Column("duplicates", "dup", ","),
)


@dataclass(frozen=True, slots=True)
class PubsubPlan:
    messages: int = 20_000
    embedded_messages: int = 200_000
    consumers: tuple[int, ...] = (1, 2, 4)
    impls: tuple[str, ...] = IMPLS
    hops: int = 500
    message_bytes: int = 256
    prefetch: int = 64
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    redis_url: str = "redis://127.0.0.1:6379/0"
    stall_s: float = 30.0


# -- what the bench drives -----------------------------------------------------------------------


class _Ackable(Protocol):
    async def ack(self) -> None: ...


D = TypeVar("D", bound=_Ackable)
D_co = TypeVar("D_co", bound=_Ackable, covariant=True)


class Inbox(Protocol[D_co]):
    def __aiter__(self) -> AsyncIterator[D_co]: ...

    async def close(self) -> None: ...


class Engine(Protocol[D_co]):
    """The part of the broker contract the bench uses; the bare peer has this shape too."""

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    async def destroy(self) -> None: ...

    async def declare(self, service: str, topics: Sequence[str]) -> None: ...

    async def publish(self, topic: str, body: bytes) -> object: ...

    async def subscribe(self, service: str, topics: Sequence[str], *, prefetch: int) -> Inbox[D_co]: ...


@dataclass(frozen=True, slots=True)
class _Side(Generic[D]):
    """One implementation: its engine, and how to read a body out of one of its deliveries."""

    impl: str
    engine: Engine[D]
    body_of: Callable[[D], bytes]


def _delivery_body(delivery: Delivery) -> bytes:
    return delivery.message.body


def _incoming_body(message: AbstractIncomingMessage) -> bytes:
    return message.body


def _side(impl: str, plan: PubsubPlan, namespace: str) -> _Side[Any]:
    if impl == PEER:
        from wirelab.bench.pubsub_peer import BareAmqp  # aio-pika only when the peer runs

        return _Side(PEER, BareAmqp(plan.amqp_url, namespace=namespace), _incoming_body)
    return _Side(impl, open_broker(_url(impl, plan), namespace=namespace), _delivery_body)


def _url(impl: str, plan: PubsubPlan) -> str:
    return {EMBEDDED: "memory", AMQP: plan.amqp_url, REDIS: plan.redis_url, PEER: plan.amqp_url}[impl]


def _shown(url: str) -> str:
    """The URL without its user and password, for messages."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def _body(seq: int, sent_ns: int, size: int) -> bytes:
    return _HEADER.pack(seq, sent_ns).ljust(size, b".")


# -- throughput ----------------------------------------------------------------------------------


class _Tally:
    """Every delivery of one row: which sequence numbers came, how often, first and last times."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen = bytearray(expected)
        self.received = 0
        self.distinct = 0
        self.first_ns = 0
        self.last_ns = 0
        self.done = asyncio.Event()

    def receive(self, body: bytes) -> None:
        if not self.first_ns:
            self.first_ns = time.perf_counter_ns()
        self.received += 1
        seq = _HEADER.unpack_from(body)[0]
        if seq < self.expected and not self.seen[seq]:
            self.seen[seq] = 1
            self.distinct += 1

    def acked(self) -> None:
        if self.distinct == self.expected and not self.done.is_set():
            self.last_ns = time.perf_counter_ns()
            self.done.set()


async def _throughput(
    side: _Side[Any], consumers: int, plan: PubsubPlan, progress: Progress
) -> dict[str, Any]:
    messages = plan.embedded_messages if side.impl == EMBEDDED else plan.messages
    service, topic = f"c{consumers}", f"bench.c{consumers}"
    await side.engine.declare(service, [topic])
    bar = progress.add_task(f"{side.impl}, {_consumers(str(consumers), consumers)}", total=2 * messages)
    publish_s, publish_cpu_s = await _publish(
        side.engine, topic, messages, plan.message_bytes, progress, bar
    )
    tally = _Tally(messages)
    consume_cpu_s = await _consume(
        side, service, topic, consumers, tally, plan, lambda n: progress.update(bar, completed=messages + n)
    )
    consume_s = (tally.last_ns - tally.first_ns) / 1e9 if tally.done.is_set() else None
    return {
        "impl": side.impl,
        "consumers": consumers,
        "publish_per_s": messages / publish_s,
        "consume_per_s": messages / consume_s if consume_s else None,
        "hop_p50_ms": None,
        "hop_p99_ms": None,
        "messages": messages,
        "deliveries": tally.received,
        "missing": messages - tally.distinct,
        "duplicates": tally.received - tally.distinct,
        "publish_s": publish_s,
        "consume_s": consume_s,
        "publish_cpu_us_per_msg": publish_cpu_s / messages * 1e6,
        "consume_cpu_us_per_msg": consume_cpu_s / tally.received * 1e6 if tally.received else None,
    }


async def _publish(
    engine: Engine[Any], topic: str, messages: int, size: int, progress: Progress, bar: TaskID
) -> tuple[float, float]:
    """One publisher, each publish awaited; the seconds it took, and our CPU seconds meanwhile.

    Progress is updated every 1% only, so that it costs nothing measurable.
    """
    stride = max(1, messages // 100)
    gc.collect()
    cpu, started = time.process_time(), time.perf_counter()
    for seq in range(messages):
        await engine.publish(topic, _body(seq, 0, size))
        if seq % stride == 0:
            progress.update(bar, completed=seq)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    progress.update(bar, completed=messages)
    return elapsed, cpu


async def _consume(
    side: _Side[D],
    service: str,
    topic: str,
    consumers: int,
    tally: _Tally,
    plan: PubsubPlan,
    tick: Callable[[int], None],
) -> float:
    """N consumers drain the queue into `tally`; our CPU seconds meanwhile."""
    inboxes = [
        await side.engine.subscribe(service, [topic], prefetch=plan.prefetch) for _ in range(consumers)
    ]
    gc.collect()
    cpu = time.process_time()
    drains = [asyncio.create_task(_drain(inbox, side.body_of, tally)) for inbox in inboxes]
    try:
        await _wait_drained(tally, drains, plan.stall_s, tick)
        return time.process_time() - cpu
    finally:
        for drain in drains:
            drain.cancel()
        await asyncio.gather(*drains, return_exceptions=True)
        for inbox in inboxes:
            await inbox.close()


async def _drain(inbox: Inbox[D], body_of: Callable[[D], bytes], tally: _Tally) -> None:
    async for delivery in inbox:
        tally.receive(body_of(delivery))
        await delivery.ack()
        tally.acked()


async def _wait_drained(
    tally: _Tally, drains: Sequence[asyncio.Task[None]], stall_s: float, tick: Callable[[int], None]
) -> None:
    """Until every message is in, or a consumer fails, or nothing arrives for `stall_s` seconds."""
    waiter = asyncio.ensure_future(tally.done.wait())
    seen, since = -1, time.monotonic()
    try:
        while not waiter.done():
            await asyncio.wait([waiter, *drains], timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
            for drain in drains:
                if drain.done():
                    drain.result()  # raises what ended it
                    raise BrokerError("a subscription ended before every message came")
            tick(tally.received)
            if tally.received != seen:
                seen, since = tally.received, time.monotonic()
            elif time.monotonic() - since > stall_s:
                return  # the row reports what is missing
    finally:
        waiter.cancel()


# -- hop latency ---------------------------------------------------------------------------------


async def _hops(side: _Side[D], hops: int, plan: PubsubPlan, progress: Progress | None) -> list[float]:
    """One message at a time: publish, receive, ack, then the next; each receive - send, in ms."""
    inbox = await side.engine.subscribe("hop", ["bench.hop"], prefetch=plan.prefetch)
    arrivals: asyncio.Queue[int] = asyncio.Queue()
    echo = asyncio.create_task(_echo(inbox, side.body_of, arrivals))
    bar = progress.add_task(f"{side.impl}: hop latency", total=hops) if progress else None
    latencies = []
    try:
        gc.collect()
        for seq in range(hops):
            await side.engine.publish("bench.hop", _body(seq, time.perf_counter_ns(), plan.message_bytes))
            latencies.append(await _arrival(arrivals, echo, plan.stall_s) / 1e6)
            if progress is not None and bar is not None:
                progress.advance(bar)
    finally:
        echo.cancel()
        await asyncio.gather(echo, return_exceptions=True)
        await inbox.close()
    return latencies


async def _echo(inbox: Inbox[D], body_of: Callable[[D], bytes], arrivals: asyncio.Queue[int]) -> None:
    try:
        async for delivery in inbox:
            received = time.perf_counter_ns()
            sent = _HEADER.unpack_from(body_of(delivery))[1]
            await delivery.ack()
            arrivals.put_nowait(received - sent)
    finally:
        arrivals.put_nowait(-1)  # the subscription ended: wake the publisher


async def _arrival(arrivals: asyncio.Queue[int], echo: asyncio.Task[None], seconds: float) -> int:
    try:
        latency = await asyncio.wait_for(arrivals.get(), seconds)
    except TimeoutError:
        raise BrokerError(f"a hop message did not arrive within {seconds:g} s") from None
    if latency < 0:
        await echo  # raises what ended the subscription, if anything did
        raise BrokerError("the hop subscription ended")
    return latency


# -- the whole scenario ----------------------------------------------------------------------------


def run_pubsub(plan: PubsubPlan, *, json_path: Path | None, console: Console, progress: Progress) -> int:
    """Measure every implementation that can be reached, print the table and ratios; the exit status.

    0 when at least one implementation ran and every message came exactly once.
    """
    with progress:
        rows, skipped = runner.run(_measure_all(plan, progress))
    title = (
        f"pub/sub: messages/s and client CPU µs per message; {plan.messages:,} messages per row "
        f"({plan.embedded_messages:,} embedded) of {plan.message_bytes} bytes, persistent, 1 publisher, "
        f"prefetch {plan.prefetch}; hop latency over {plan.hops} one-at-a-time messages"
    )
    print_table(console, title, COLUMNS, rows)
    for line in summary(rows):
        console.print(line)
    for impl, reason in skipped.items():
        console.print(f"[yellow]skipped {impl}: {reason}")
    if json_path is not None:
        document_plan = {
            "messages": plan.messages,
            "embedded_messages": plan.embedded_messages,
            "hops": plan.hops,
            "message_bytes": plan.message_bytes,
            "prefetch": plan.prefetch,
        }
        write_json(json_path, "pubsub", rows, plan=document_plan, skipped=skipped)
    ran = bool(rows)
    return 0 if ran and all(r["missing"] == 0 and r["duplicates"] == 0 for r in rows) else 1


async def _measure_all(plan: PubsubPlan, progress: Progress) -> tuple[list[dict[str, Any]], dict[str, str]]:
    token = secrets.token_hex(4)
    async with contextlib.AsyncExitStack() as stack:
        sides, skipped = await _open_all(plan, token, stack, progress.console)
        for side in sides:
            await _hops(side, WARM_UP_HOPS, plan, None)
        rows = {}
        for consumers in plan.consumers:
            for side in sides:
                rows[side.impl, consumers] = await _throughput(side, consumers, plan, progress)
        if 1 in plan.consumers:
            for side in sides:
                latencies = await _hops(side, plan.hops, plan, progress)
                rows[side.impl, 1].update(
                    hop_p50_ms=percentile(latencies, 50), hop_p99_ms=percentile(latencies, 99)
                )
    return [rows[side.impl, n] for side in sides for n in plan.consumers], skipped


async def _open_all(
    plan: PubsubPlan, token: str, stack: contextlib.AsyncExitStack, console: Console
) -> tuple[list[_Side[Any]], dict[str, str]]:
    """Connect every implementation, each in its own namespace; the ones that fail are skipped."""
    sides, skipped = [], {}
    for impl in plan.impls:
        try:
            side = _side(impl, plan, f"wlbench-{token}-{impl}")
        except Exception as exc:  # an adapter that is not there, or not installed
            skipped[impl] = f"cannot be used: {exc!r}"
            continue
        try:
            async with asyncio.timeout(CONNECT_S):
                await side.engine.connect()
        except Exception as exc:
            skipped[impl] = f"{_shown(_url(impl, plan))} unreachable: {exc!r}"
            with contextlib.suppress(Exception):
                await side.engine.close()
            continue
        stack.push_async_callback(_dispose, side, console)
        sides.append(side)
    return sides, skipped


async def _dispose(side: _Side[Any], console: Console) -> None:
    """Remove the namespace, so that runs do not pile up on the engines, then disconnect."""
    try:
        async with asyncio.timeout(CLEANUP_S):
            await side.engine.destroy()
    except Exception as exc:
        console.print(f"[yellow]{side.impl}: could not remove its namespace: {exc!r}")
    finally:
        async with asyncio.timeout(CLEANUP_S):
            await side.engine.close()


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """wirelab-amqp against the bare aio-pika loop per consumer count, then the goals."""
    by = {(row["impl"], row["consumers"]): row for row in rows}
    counts = sorted({row["consumers"] for row in rows})
    pairs = [(n, by[AMQP, n], by[PEER, n]) for n in counts if (AMQP, n) in by and (PEER, n) in by]
    lines = [_versus(n, ours, peer) for n, ours, peer in pairs]
    for key, what in (("publish_per_s", "publish"), ("consume_per_s", "consume")):
        if pairs:
            ratios = [(n, _ratio(ours, peer, key)) for n, ours, peer in pairs]
            lines.append(_goal(f"{AMQP} {what} >= {GOAL_RATIO:g}x {PEER}", ratios, GOAL_RATIO, ".2f", "x"))
        embedded = [(n, by[EMBEDDED, n][key]) for n in counts if (EMBEDDED, n) in by]
        if embedded:
            goal = f"embedded {what} >= {GOAL_EMBEDDED_PER_S:,} msg/s"
            lines.append(_goal(goal, embedded, GOAL_EMBEDDED_PER_S, ",.0f", " msg/s"))
    return lines


def _versus(consumers: int, ours: dict[str, Any], peer: dict[str, Any]) -> str:
    """One row's ratios: above 1x is faster for msg/s, and costlier for CPU/msg and latency."""

    def ratio(key: str) -> str:
        return _times(_ratio(ours, peer, key))

    line = (
        f"{AMQP} vs {PEER}, {_consumers(str(consumers), consumers)}: "
        f"msg/s publish {ratio('publish_per_s')}, consume {ratio('consume_per_s')}; "
        f"CPU/msg publish {ratio('publish_cpu_us_per_msg')}, consume {ratio('consume_cpu_us_per_msg')}"
    )
    if ours.get("hop_p50_ms") is not None:
        line += f"; hop p50 {ratio('hop_p50_ms')}, p99 {ratio('hop_p99_ms')}"
    return line


def _consumers(counts: str, most: int) -> str:
    return f"{counts} consumer{'s' * (most > 1)}"


def _ratio(ours: dict[str, Any], peer: dict[str, Any], key: str) -> float | None:
    if ours.get(key) is None or not peer.get(key):
        return None
    return float(ours[key] / peer[key])


def _times(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.2f}x"


def _goal(name: str, values: Sequence[tuple[int, float | None]], goal: float, spec: str, unit: str) -> str:
    """Met only if every consumer count meets it; each one's figure is shown."""
    shown = " / ".join("-" if v is None else format(v, spec) for _, v in values)
    counts = _consumers("/".join(str(n) for n, _ in values), max(n for n, _ in values))
    met = all(v is not None and v >= goal for _, v in values)
    verdict = "[green]met" if met else "[red]not met"
    return f"goal {name}: {shown}{unit} at {counts} ({verdict}[/])"

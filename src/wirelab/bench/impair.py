"""`wirelab bench impair`: the impairments measured against what they were set to.

Theory of operation: an impairment is only as good as its figures, so each one is set and then
measured from outside, the way a user would see it:

    delay   ping-pong of a small message, `pings` times: the one-way delay is half the median round
            trip (which includes loopback's own few microseconds); TCP and UDP through the user-space
            proxy, and with the namespace's packet queue, TCP, UDP and ICMP (ping(8)) in the path
    rate    a bulk TCP copy of `bulk_s` seconds' worth at each rate: the rate is what the receiver
            got between its first and its last read (so neither the delay nor the start counts)
    loss    a paced UDP flood of `datagrams` datagrams one way: the share that never arrived; in the
            namespace also a TCP copy (the largest rate's bulk size, unlimited) through the same
            loss: the share of packets the kernel dropped, and its TCP retransmissions

Each row names its `impl` (proxy: wirelab.net.impair; netns: wirelab.net.netns's nftables loss and
wirelab.net.nfqueue's packet queue), its `transport` and the set and measured figures with their
error. The namespace rows need root, ip, nft and iptables; without them they are left out, saying why.
Everything runs in this process on the standard event loop, as `wirelab impair` does, except the
packet queue, which has a process of its own.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import statistics
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from wirelab.bench import runner
from wirelab.bench.report import Column, percentile, print_table, write_json
from wirelab.net.impair import impair_tcp, impair_udp
from wirelab.net.netns import Namespace, NamespaceUnavailable, lossy_namespace
from wirelab.net.nfqueue import delay_packets
from wirelab.proto.impair import Impairment

__all__ = ["ImpairPlan", "run_impair"]

LOCAL = ("127.0.0.1", 0)
NONE = Impairment()
CHUNK = 1 << 16
BURST = 50
"""Datagrams sent between two looks at the receiver, so no socket buffer ever overflows."""
Address = tuple[str, int]
Via = Callable[[Address], AbstractAsyncContextManager[Address]]
"""What stands between client and server: given the server's address, the address to dial."""
Sockets = Callable[[int], socket.socket]
"""A non-blocking AF_INET socket of a kind (SOCK_STREAM, SOCK_DGRAM), here or in a namespace."""

TABLES = {
    "delay": (
        "One-way delay, set and measured (half the median round trip)",
        (
            Column("impl", "impl"),
            Column("transport", "transport"),
            Column("set_ms", "set ms", ".1f"),
            Column("measured_ms", "measured ms", ".3f"),
            Column("error_ms", "error ms", "+.3f"),
            Column("p99_ms", "p99 ms", ".3f"),
            Column("samples", "samples", ","),
        ),
    ),
    "rate": (
        "Bulk TCP copy, set and measured rate",
        (
            Column("impl", "impl"),
            Column("transport", "transport"),
            Column("set_mbit_s", "set Mbit/s", ",.1f"),
            Column("measured_mbit_s", "measured Mbit/s", ",.2f"),
            Column("error_pct", "error %", "+.2f"),
            Column("bytes", "bytes", ","),
        ),
    ),
    "loss": (
        "Loss, set and measured",
        (
            Column("impl", "impl"),
            Column("transport", "transport"),
            Column("set_pct", "set %", ".2f"),
            Column("measured_pct", "measured %", ".3f"),
            Column("error_pct_points", "error points", "+.3f"),
            Column("sent", "sent", ","),
            Column("retrans_segs", "TCP retransmits", ","),
        ),
    ),
}


@dataclass(frozen=True, slots=True)
class ImpairPlan:
    delay_s: float = 0.025
    pings: int = 100
    rates_bps: tuple[int, ...] = (10_000_000, 100_000_000)
    bulk_s: float = 3.0
    losses: tuple[float, ...] = (0.01, 0.03)
    datagrams: int = 20_000
    namespace: bool = True


def _bulk_size(rate_bps: int, seconds: float) -> int:
    """`seconds` at the rate, in whole chunks of the copy."""
    return max(int(rate_bps * seconds / 8) // CHUNK, 2) * CHUNK


def _host(kind: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, kind)
    sock.setblocking(False)
    return sock


# -- the three measurements, over any sockets ----------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
    writer.close()


async def tcp_round_trips(sockets: Sockets, pings: int, via: Via) -> list[float]:
    """`pings` round trips of 32 bytes to an echo server, through `via`."""
    listener = sockets(socket.SOCK_STREAM)
    listener.bind(LOCAL)
    listener.listen()
    server = await asyncio.start_server(_echo, sock=listener)
    try:
        async with via(listener.getsockname()) as address:
            client = sockets(socket.SOCK_STREAM)
            await asyncio.get_running_loop().sock_connect(client, address)
            reader, writer = await asyncio.open_connection(sock=client)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rtts = []
            for _ in range(pings):
                started = time.perf_counter()
                writer.write(bytes(32))
                await reader.readexactly(32)
                rtts.append(time.perf_counter() - started)
            writer.close()
            return rtts
    finally:
        server.close()
        await server.wait_closed()


async def udp_round_trips(sockets: Sockets, pings: int, via: Via) -> list[float]:
    loop = asyncio.get_running_loop()
    echo_sock = sockets(socket.SOCK_DGRAM)
    echo_sock.bind(LOCAL)
    echo, _ = await loop.create_datagram_endpoint(_UdpEcho, sock=echo_sock)
    try:
        async with via(echo_sock.getsockname()) as address:
            with sockets(socket.SOCK_DGRAM) as client:
                client.connect(address)
                rtts = []
                for _ in range(pings):
                    started = time.perf_counter()
                    await loop.sock_sendall(client, bytes(32))
                    await asyncio.wait_for(loop.sock_recv(client, 64), 5)
                    rtts.append(time.perf_counter() - started)
                return rtts
    finally:
        echo.close()


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


async def bulk_rate(sockets: Sockets, size: int, via: Via) -> float:
    """Bits per second the receiver got between its first and last read of a `size`-byte copy."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[float] = loop.create_future()

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await reader.read(CHUNK)
        started, got = time.perf_counter(), 0
        ended = started
        while data := await reader.read(CHUNK):
            got += len(data)
            ended = time.perf_counter()
        writer.close()
        done.set_result(got * 8 / (ended - started) if got and first else 0.0)

    listener = sockets(socket.SOCK_STREAM)
    listener.bind(LOCAL)
    listener.listen()
    server = await asyncio.start_server(sink, sock=listener)
    try:
        async with via(listener.getsockname()) as address:
            client = sockets(socket.SOCK_STREAM)
            await loop.sock_connect(client, address)
            _, writer = await asyncio.open_connection(sock=client)
            chunk = bytes(CHUNK)
            for _ in range(size // CHUNK):
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
            rate = await asyncio.wait_for(done, 600)
            writer.close()
            return rate
    finally:
        server.close()
        await server.wait_closed()


async def udp_delivered(sockets: Sockets, count: int, via: Via) -> int:
    """How many of `count` datagrams, sent in paced bursts, arrived."""
    with sockets(socket.SOCK_DGRAM) as sink, sockets(socket.SOCK_DGRAM) as sender:
        sink.bind(LOCAL)
        async with via(sink.getsockname()) as address:
            sender.connect(address)
            received = 0
            for n in range(count):
                sender.send(n.to_bytes(4, "big"))
                if n % BURST == BURST - 1:
                    await asyncio.sleep(0.001)
                    received += drain_datagrams(sink)
            await asyncio.sleep(0.2)
            return received + drain_datagrams(sink)


def drain_datagrams(sock: socket.socket) -> int:
    """Read every datagram waiting on the non-blocking `sock`; how many there were."""
    n = 0
    while True:
        try:
            sock.recv(64)
        except BlockingIOError:
            return n
        n += 1


# -- rows ------------------------------------------------------------------------------------------------


def _delay_row(impl: str, transport: str, set_s: float, rtts: Sequence[float]) -> dict[str, Any]:
    measured = statistics.median(rtts) / 2 * 1000
    p99 = percentile(rtts, 99)
    return {
        "measure": "delay",
        "impl": impl,
        "transport": transport,
        "set_ms": set_s * 1000,
        "measured_ms": measured,
        "error_ms": measured - set_s * 1000,
        "p99_ms": p99 / 2 * 1000 if p99 is not None else None,
        "min_ms": min(rtts) / 2 * 1000,
        "samples": len(rtts),
    }


def _rate_row(impl: str, set_bps: int, measured_bps: float, size: int) -> dict[str, Any]:
    return {
        "measure": "rate",
        "impl": impl,
        "transport": "tcp",
        "set_mbit_s": set_bps / 1e6,
        "measured_mbit_s": measured_bps / 1e6,
        "error_pct": (measured_bps / set_bps - 1) * 100,
        "bytes": size,
    }


def _loss_row(impl: str, transport: str, loss: float, sent: int, lost: int, **extra: Any) -> dict[str, Any]:
    measured = lost / sent * 100
    return {
        "measure": "loss",
        "impl": impl,
        "transport": transport,
        "set_pct": loss * 100,
        "measured_pct": measured,
        "error_pct_points": measured - loss * 100,
        "sent": sent,
        "lost": lost,
        **extra,
    }


# -- the runs --------------------------------------------------------------------------------------------


async def _proxy_rows(plan: ImpairPlan, progress: Progress) -> list[dict[str, Any]]:
    task = progress.add_task("user-space proxy", total=3)
    delay = Impairment(delay_s=plan.delay_s)
    tcp, udp = partial(_tcp_proxy, up=delay, down=delay), partial(_udp_proxy, up=delay, down=delay)
    rows = [
        _delay_row("proxy", "tcp", plan.delay_s, await tcp_round_trips(_host, plan.pings, tcp)),
        _delay_row("proxy", "udp", plan.delay_s, await udp_round_trips(_host, plan.pings, udp)),
    ]
    progress.advance(task)
    for rate in plan.rates_bps:
        size = _bulk_size(rate, plan.bulk_s)
        measured = await bulk_rate(
            _host, size, partial(_tcp_proxy, up=Impairment(rate_bps=rate), down=NONE)
        )
        rows.append(_rate_row("proxy", rate, measured, size))
    progress.advance(task)
    for loss in plan.losses:
        lossy = partial(_udp_proxy, up=Impairment(loss=loss, seed=1), down=NONE)
        delivered = await udp_delivered(_host, plan.datagrams, lossy)
        rows.append(_loss_row("proxy", "udp", loss, plan.datagrams, plan.datagrams - delivered))
    progress.advance(task)
    return rows


@asynccontextmanager
async def _tcp_proxy(upstream: Address, *, up: Impairment, down: Impairment) -> AsyncIterator[Address]:
    async with impair_tcp(LOCAL, upstream, up=up, down=down) as proxy:
        yield proxy.address


@asynccontextmanager
async def _udp_proxy(upstream: Address, *, up: Impairment, down: Impairment) -> AsyncIterator[Address]:
    async with impair_udp(LOCAL, upstream, up=up, down=down) as proxy:
        yield proxy.address


@asynccontextmanager
async def _direct(address: Address) -> AsyncIterator[Address]:
    """No proxy: dial the server itself (its packets are impaired on their way, if at all)."""
    yield address


async def _namespace_rows(
    plan: ImpairPlan, namespace: Namespace, progress: Progress
) -> list[dict[str, Any]]:
    task = progress.add_task("namespace", total=3)
    sockets = partial(namespace.socket, socket.AF_INET)
    delay = Impairment(delay_s=plan.delay_s)
    with delay_packets(namespace, delay):
        rows = [
            _delay_row("netns", "tcp", plan.delay_s, await tcp_round_trips(sockets, plan.pings, _direct)),
            _delay_row("netns", "udp", plan.delay_s, await udp_round_trips(sockets, plan.pings, _direct)),
        ]
        if shutil.which("ping") is not None:
            rows.append(_delay_row("netns", "icmp", plan.delay_s, await _ping(namespace, plan.pings)))
    progress.advance(task)
    for rate in plan.rates_bps:
        size = _bulk_size(rate, plan.bulk_s)
        with delay_packets(namespace, Impairment(rate_bps=rate), NONE):
            rows.append(_rate_row("netns", rate, await bulk_rate(sockets, size, _direct), size))
    progress.advance(task)
    for loss in plan.losses:
        namespace.set_loss(loss)
        delivered = await udp_delivered(sockets, plan.datagrams, _direct)
        rows.append(_loss_row("netns", "udp", loss, plan.datagrams, plan.datagrams - delivered))
        rows.append(await _tcp_loss_row(namespace, loss, plan))
    namespace.set_loss(0)
    progress.advance(task)
    return rows


async def _tcp_loss_row(namespace: Namespace, loss: float, plan: ImpairPlan) -> dict[str, Any]:
    """A bulk copy through the loss: the kernel's counters say what was dropped and retransmitted."""
    namespace.set_loss(loss)
    before = namespace.snmp()
    size = _bulk_size(max(plan.rates_bps), plan.bulk_s)
    goodput = await bulk_rate(partial(namespace.socket, socket.AF_INET), size, _direct)
    after, counters = namespace.snmp(), namespace.counters()
    return _loss_row(
        "netns",
        "tcp",
        loss,
        counters.seen,
        counters.dropped,
        retrans_segs=after["RetransSegs"] - before["RetransSegs"],
        out_segs=after["OutSegs"] - before["OutSegs"],
        goodput_mbit_s=goodput / 1e6,
    )


async def _ping(namespace: Namespace, count: int) -> list[float]:
    """ping(8)'s own round trips, in seconds."""
    process = await asyncio.create_subprocess_exec(
        *namespace.argv("ping", "-n", "-c", str(count), "-i", "0.01", "-w", str(count + 10), "127.0.0.1"),
        stdout=asyncio.subprocess.PIPE,
    )
    output, _ = await process.communicate()
    return [float(ms) / 1000 for ms in re.findall(rb"time=([\d.]+) ms", output)]


async def _measure(plan: ImpairPlan, progress: Progress, console: Console) -> list[dict[str, Any]]:
    rows = await _proxy_rows(plan, progress)
    if not plan.namespace:
        return rows
    try:
        with lossy_namespace() as namespace:
            rows += await _namespace_rows(plan, namespace, progress)
    except NamespaceUnavailable as exc:
        console.print(f"namespace rows left out: {exc}")
    return rows


def run_impair(plan: ImpairPlan, *, json_path: Path | None, console: Console, progress: Progress) -> int:
    """Measure every impairment, print the tables; the exit status."""
    with progress:
        rows = runner.run(_measure(plan, progress, console))
    for measure, (title, columns) in TABLES.items():
        print_table(console, title, columns, [row for row in rows if row["measure"] == measure])
    if json_path is not None:
        write_json(json_path, "impair", rows, plan=_plan_json(plan))
    return 0


def _plan_json(plan: ImpairPlan) -> dict[str, Any]:
    return {
        "delay_s": plan.delay_s,
        "pings": plan.pings,
        "rates_bps": list(plan.rates_bps),
        "bulk_s": plan.bulk_s,
        "losses": list(plan.losses),
        "datagrams": plan.datagrams,
        "namespace": plan.namespace,
    }

"""The impairing proxies over real loopback sockets: delay at least as set, rate no faster than set,
bytes intact and in order, half-close, backpressure, unreachable upstreams, UDP loss and mappings.

Lower bounds are strict (a proxy must never be faster than its link); upper bounds are generous, since
a loaded machine can only make things slower. The tight figures come from `wirelab bench impair`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from wirelab.net.impair import EARLY_S, HELD_LIMIT, impair_tcp, impair_udp
from wirelab.proto.impair import Impairment

LOCAL = ("127.0.0.1", 0)
NONE = Impairment()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Echo until the client's end of file, then close: a half-close must get through both ways."""
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.close()


@asynccontextmanager
async def tcp_server(handler=_echo) -> AsyncIterator[tuple[str, int]]:  # type: ignore[no-untyped-def]
    server = await asyncio.start_server(handler, *LOCAL)
    try:
        yield server.sockets[0].getsockname()[:2]
    finally:
        server.close()
        await server.wait_closed()


async def test_a_round_trip_takes_at_least_both_delays_and_echoes_intact() -> None:
    up, down = Impairment(delay_s=0.030), Impairment(delay_s=0.010)
    async with tcp_server() as upstream, impair_tcp(LOCAL, upstream, up=up, down=down) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        for n in range(5):
            started = time.perf_counter()
            writer.write(b"ping %d" % n)
            assert await reader.readexactly(6) == b"ping %d" % n
            rtt = time.perf_counter() - started
            assert 0.040 - 2 * EARLY_S <= rtt < 0.040 + 0.5
        writer.close()


async def test_a_bulk_copy_runs_no_faster_than_the_rate_and_arrives_intact_in_order() -> None:
    """2 MiB at 40 Mbit/s cannot take less than 0.42 s, and jitter cannot reorder a stream."""
    data = random.Random(1).randbytes(2 << 20)
    link = Impairment(delay_s=0.005, jitter_s=0.004, rate_bps=40_000_000, seed=5)
    async with tcp_server() as upstream, impair_tcp(LOCAL, upstream, up=link, down=NONE) as proxy:
        reader, writer = await asyncio.open_connection(*proxy.address)
        started = time.perf_counter()

        async def send() -> None:
            for i in range(0, len(data), 1000):  # many small writes: the order is what is tested
                writer.write(data[i : i + 1000])
            await writer.drain()
            writer.write_eof()

        _, echoed = await asyncio.gather(send(), reader.read())
        seconds = time.perf_counter() - started
        writer.close()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
    assert len(data) * 8 / 40e6 <= seconds < 10


async def test_end_of_file_is_delayed_like_data_and_becomes_a_half_close() -> None:
    async def answer_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # until the client's half-close
        writer.write(b"got " + request)
        writer.close()

    async with (
        tcp_server(answer_after_eof) as upstream,
        impair_tcp(LOCAL, upstream, up=Impairment(delay_s=0.020), down=NONE) as proxy,
    ):
        reader, writer = await asyncio.open_connection(*proxy.address)
        started = time.perf_counter()
        writer.write(b"question")
        writer.write_eof()
        assert await reader.read() == b"got question"
        assert time.perf_counter() - started >= 0.020 - EARLY_S
        writer.close()


async def test_a_sender_faster_than_the_link_is_held_back_not_buffered_without_end() -> None:
    """An upstream that never reads: the client blocks once the proxy holds its limit and the kernel
    buffers are full; nothing like the 256 MiB offered is taken in."""
    stuck = asyncio.Event()

    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stuck.wait()
        writer.close()

    async with tcp_server(never_read) as upstream, impair_tcp(LOCAL, upstream, up=NONE, down=NONE) as proxy:
        _, writer = await asyncio.open_connection(*proxy.address)
        chunk = bytes(1 << 20)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(2):
                for _ in range(256):
                    writer.write(chunk)
                    await writer.drain()
        assert proxy.up.statistics().bytes < HELD_LIMIT + (48 << 20)  # the hold plus loopback's buffers
        writer.transport.abort()
        stuck.set()


async def test_an_unreachable_upstream_closes_the_client_and_says_so(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as unused:
        unused.bind(LOCAL)
        closed_port = unused.getsockname()[:2]  # bound, never listening: connections are refused
        async with impair_tcp(LOCAL, closed_port, up=NONE, down=NONE) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            with caplog.at_level(logging.WARNING, logger="wirelab.net.impair"):
                assert await reader.read() == b""  # the proxy hangs up
            writer.close()
    assert "unreachable" in caplog.text


async def test_stopping_resets_open_connections_and_leaves_no_task() -> None:
    async with tcp_server() as upstream:
        async with impair_tcp(LOCAL, upstream, up=NONE, down=NONE) as proxy:
            reader, writer = await asyncio.open_connection(*proxy.address)
            writer.write(b"hello")
            assert await reader.readexactly(5) == b"hello"
        assert await reader.read() == b""
        writer.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_the_listening_address_in_use_is_an_os_error() -> None:
    async with tcp_server() as taken:
        with pytest.raises(OSError):
            async with impair_tcp(taken, taken, up=NONE, down=NONE):
                pass


# -- UDP ---------------------------------------------------------------------------------------------


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]
        self.peers: set[tuple[str, int]] = set()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.peers.add(addr)
        self.transport.sendto(data, addr)


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((time.perf_counter(), data))


@asynccontextmanager
async def udp_echo() -> AsyncIterator[tuple[tuple[str, int], _UdpEcho]]:
    transport, echo = await asyncio.get_running_loop().create_datagram_endpoint(_UdpEcho, local_addr=LOCAL)
    try:
        yield transport.get_extra_info("sockname")[:2], echo
    finally:
        transport.close()


@asynccontextmanager
async def udp_client(address: tuple[str, int]) -> AsyncIterator[tuple[asyncio.DatagramTransport, _Client]]:
    transport, client = await asyncio.get_running_loop().create_datagram_endpoint(
        _Client, remote_addr=address
    )
    try:
        yield transport, client
    finally:
        transport.close()


async def test_datagrams_take_at_least_the_delay_and_each_client_gets_its_own_mapping() -> None:
    delay = Impairment(delay_s=0.015)
    async with udp_echo() as (upstream, echo), impair_udp(LOCAL, upstream, up=delay, down=delay) as proxy:
        async with udp_client(proxy.address) as (one, ones), udp_client(proxy.address) as (two, twos):
            for transport, client in ((one, ones), (two, twos)):
                started = time.perf_counter()
                transport.sendto(b"ping")
                arrived, data = await asyncio.wait_for(client.received.get(), 5)
                assert data == b"ping"
                assert 0.030 - 2 * EARLY_S <= arrived - started < 0.030 + 0.5
        assert len(echo.peers) == 2


async def test_the_share_of_datagrams_lost_is_near_the_loss() -> None:
    """20 % lost up, none down: of 2000 echoes about 1600 come back (the bound is 6 sigma wide)."""
    lossy = Impairment(loss=0.2, seed=4)
    async with udp_echo() as (upstream, _), impair_udp(LOCAL, upstream, up=lossy, down=NONE) as proxy:
        async with udp_client(proxy.address) as (transport, client):
            for n in range(2000):
                transport.sendto(n.to_bytes(4, "big"))
                if n % 50 == 49:
                    await asyncio.sleep(0.002)  # let the echoes drain: the kernel must not drop any
            await asyncio.sleep(0.3)
        assert proxy.up.statistics().dropped + proxy.up.statistics().admitted == 2000
        assert client.received.qsize() == proxy.up.statistics().admitted
    assert 1600 - 6 * 18 < client.received.qsize() < 1600 + 6 * 18


async def test_an_idle_mapping_expires(caplog: pytest.LogCaptureFixture) -> None:
    async with udp_echo() as (upstream, echo):
        caplog.set_level(logging.INFO, logger="wirelab.net.impair")
        async with (
            impair_udp(LOCAL, upstream, up=NONE, down=NONE, idle_s=0.2) as proxy,
            udp_client(proxy.address) as (transport, client),
        ):
            transport.sendto(b"a")
            await asyncio.wait_for(client.received.get(), 5)
            await asyncio.sleep(0.5)
            transport.sendto(b"b")
            await asyncio.wait_for(client.received.get(), 5)
    assert "mapping idle 0.2s: 1 datagrams up, 1 down" in caplog.text
    assert len(echo.peers) == 2  # the second datagram came from a new upstream socket

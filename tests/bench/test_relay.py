"""The counting relay: every byte relayed is counted once, in the direction it went."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from wirelab.bench.relay import CountingRelay, RelayStats


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _round_trip(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    echoed = await reader.read()
    writer.close()
    await writer.wait_closed()
    return echoed


async def test_relay_counts_bytes_both_ways_over_a_real_echo(echo_port: int) -> None:
    payload = bytes(range(256)) * 1000  # bigger than one read, so several chunks are summed
    async with CountingRelay(echo_port) as relay:
        echoed = await _round_trip(relay.port, payload)
        await relay.wait_idle()
        stats = relay.statistics()
    assert echoed == payload
    assert stats == RelayStats(connections=1, bytes_up=len(payload), bytes_down=len(payload))


async def test_relay_counts_each_connection(echo_port: int) -> None:
    async with CountingRelay(echo_port) as relay:
        before = relay.statistics()
        await asyncio.gather(*(_round_trip(relay.port, b"x" * n) for n in (1, 10, 100)))
        await relay.wait_idle()
        delta = relay.statistics() - before
    assert delta == RelayStats(connections=3, bytes_up=111, bytes_down=111)


async def test_relay_closes_sessions_still_open_when_it_stops(echo_port: int) -> None:
    async with CountingRelay(echo_port) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
    assert await reader.read() == b""  # the relay hung up on us
    writer.close()
    await writer.wait_closed()

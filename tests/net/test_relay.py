"""The relay over real loopback TCP: bulk integrity, half-close, idle timeout, reset; splice and copy."""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from wirelab.net import SPLICE_AVAILABLE, Outcome, RelayResult, relay

MODES = [
    pytest.param(True, id="splice", marks=pytest.mark.skipif(not SPLICE_AVAILABLE, reason="Linux only")),
    pytest.param(False, id="copy"),
]
Ends = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def accepted_pair() -> tuple[socket.socket, Ends]:
    """A raw server-side socket (what the relay gets) and the stream at the other end of it."""
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        ends, (raw, _) = await asyncio.gather(
            asyncio.open_connection(*listener.getsockname()), loop.sock_accept(listener)
        )
    raw.setblocking(False)
    return raw, ends


@asynccontextmanager
async def relayed(
    splice: bool, idle_timeout: float | None = None
) -> AsyncIterator[tuple[Ends, Ends, asyncio.Task[RelayResult]]]:
    """client <-> [a relay b] <-> backend, the relay running as a task."""
    a, client = await accepted_pair()
    b, backend = await accepted_pair()
    task = asyncio.create_task(relay(a, b, splice=splice, idle_timeout=idle_timeout))
    try:
        yield client, backend, task
    finally:
        for _, writer in (client, backend):
            writer.close()
        await asyncio.wait_for(task, 5)
        a.close()
        b.close()


async def send_and_hash(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    writer.write_eof()


async def read_hash(reader: asyncio.StreamReader) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    while chunk := await reader.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


@pytest.mark.parametrize("splice", MODES)
async def test_64_mib_each_way_at_once_arrives_intact(splice: bool) -> None:
    data = random.Random(6).randbytes(64 << 20)
    expected = (len(data), hashlib.sha256(data).hexdigest())
    async with relayed(splice) as ((c_reader, c_writer), (b_reader, b_writer), task):
        *_, up, down = await asyncio.gather(
            send_and_hash(c_writer, data),
            send_and_hash(b_writer, data),
            read_hash(b_reader),
            read_hash(c_reader),
        )
        assert up == expected
        assert down == expected
        assert await task == RelayResult(len(data), len(data), Outcome.DONE)


@pytest.mark.parametrize("splice", MODES)
async def test_a_fin_from_the_client_still_lets_the_whole_reply_come_back(splice: bool) -> None:
    """RFC 9293 §3.6: a FIN closes one direction only; the backend answers after it, at length."""
    async with relayed(splice) as ((c_reader, c_writer), (b_reader, b_writer), task):
        c_writer.write(b"how long is the answer?")
        c_writer.write_eof()
        assert await b_reader.read() == b"how long is the answer?"  # the FIN reached the backend
        reply = b"x" * (3 << 20)
        b_writer.write(struct.pack("!I", len(reply)) + reply)
        await b_writer.drain()
        b_writer.write_eof()
        size = struct.unpack("!I", await c_reader.readexactly(4))[0]
        assert await c_reader.readexactly(size) == reply
        assert await c_reader.read() == b""
        assert (await task).outcome is Outcome.DONE


@pytest.mark.parametrize("splice", MODES)
async def test_idle_connections_are_closed_after_the_idle_timeout(splice: bool) -> None:
    async with relayed(splice, idle_timeout=0.2) as ((_, c_writer), (b_reader, _), task):
        c_writer.write(b"ping")
        assert await b_reader.readexactly(4) == b"ping"
        started = asyncio.get_running_loop().time()
        result = await asyncio.wait_for(task, 2)
        assert result == RelayResult(4, 0, Outcome.IDLE)
        assert 0.15 < asyncio.get_running_loop().time() - started < 1.0


@pytest.mark.parametrize("splice", MODES)
async def test_a_reset_from_the_backend_ends_both_directions(splice: bool) -> None:
    async with relayed(splice) as ((_, c_writer), (_, b_writer), task):
        c_writer.write(b"unread by the backend, so its close resets")
        await asyncio.sleep(0.05)
        backend_socket = b_writer.get_extra_info("socket")
        backend_socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        b_writer.transport.abort()
        assert (await asyncio.wait_for(task, 2)).outcome is Outcome.RESET

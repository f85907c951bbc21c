"""The layer 4 balancer in this process, over real loopback sockets to real asyncio backends."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.proxy.l4_backends import backends, blackhole, dead_port, greeting, hello_backend, proxy_aware
from wirelab.net import SPLICE_AVAILABLE
from wirelab.proto.balance import Backend, HealthPolicy, State
from wirelab.proxy.config import L4Config
from wirelab.proxy.l4 import L4Balancer


@asynccontextmanager
async def balancer(*targets: Backend, **settings: Any) -> AsyncIterator[L4Balancer]:
    config = L4Config(listen=("127.0.0.1", 0), backends=targets, **settings)
    running = L4Balancer(config)
    await running.start()
    try:
        yield running
    finally:
        await running.drain(1.0)


async def greetings(lb: L4Balancer, count: int) -> Counter[str]:
    return Counter([await greeting(lb.address) for _ in range(count)])


async def test_round_robin_follows_the_weights() -> None:
    hellos = backends(hello_backend("1"), hello_backend("2"))
    async with hellos as (one, two), balancer(dataclasses.replace(one, weight=2), two) as lb:
        assert await greetings(lb, 9) == {"hello from backend 1": 6, "hello from backend 2": 3}


async def test_least_connections_sends_new_clients_to_the_idle_backend() -> None:
    hellos = backends(hello_backend("1"), hello_backend("2"))
    async with hellos as targets, balancer(*targets, algorithm="least-connections") as lb:
        held = [await asyncio.open_connection(*lb.address) for _ in range(3)]
        first = Counter([(await reader.readline()).decode().strip() for reader, _ in held])
        assert first == {"hello from backend 1": 2, "hello from backend 2": 1}
        assert await greeting(lb.address) == "hello from backend 2"
        for _, writer in held:
            writer.close()


async def test_source_hash_keeps_one_client_address_on_one_backend() -> None:
    hellos = backends(*(hello_backend(str(n)) for n in range(4)))
    async with hellos as targets, balancer(*targets, algorithm="source-hash") as lb:
        assert len(await greetings(lb, 6)) == 1


async def test_a_dead_backend_is_ejected_and_its_clients_redispatched() -> None:
    async with backends(hello_backend("1")) as (alive,):
        dead = Backend("127.0.0.1", dead_port())
        async with balancer(dead, alive) as lb:
            assert await greetings(lb, 4) == {"hello from backend 1": 4}
            assert lb.pool.state(dead) is State.EJECTED
            assert lb.counters["connect_failures"] == 1


async def test_active_checks_readmit_a_backend_that_comes_back() -> None:
    port = dead_port()
    health = HealthPolicy(rise=2, fall=1, eject_s=60.0)  # only the active checks can bring it back
    returning = Backend("127.0.0.1", port)
    async with (
        backends(hello_backend("1")) as (alive,),
        balancer(returning, alive, check_interval_s=0.05, health=health) as lb,
    ):
        assert await greetings(lb, 2) == {"hello from backend 1": 2}
        assert lb.pool.state(returning) is not State.UP
        async with backends(hello_backend("2"), port=port):
            for _ in range(40):
                if lb.pool.state(returning) is State.UP:
                    break
                await asyncio.sleep(0.05)
            assert set(await greetings(lb, 4)) == {"hello from backend 1", "hello from backend 2"}


async def test_connect_timeout_moves_on_to_the_next_backend() -> None:
    async with (
        blackhole() as stuck,
        backends(hello_backend("1")) as (alive,),
        balancer(stuck, alive, connect_timeout_s=0.2) as lb,
    ):
        started = asyncio.get_running_loop().time()
        assert await greeting(lb.address) == "hello from backend 1"
        assert 0.2 <= asyncio.get_running_loop().time() - started < 1.5
        assert lb.pool.state(stuck) is State.EJECTED


async def test_no_backend_left_closes_the_client() -> None:
    async with balancer(Backend("127.0.0.1", dead_port())) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()
        assert lb.counters["no_backend"] == 1


async def test_beyond_max_connections_clients_wait_for_a_free_slot() -> None:
    async with backends(hello_backend("1")) as targets, balancer(*targets, max_connections=1) as lb:
        first_reader, first = await asyncio.open_connection(*lb.address)
        assert await first_reader.readline() == b"hello from backend 1\n"
        second_reader, second = await asyncio.open_connection(*lb.address)  # the kernel's backlog
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(second_reader.readline(), 0.3)
        first.close()
        assert await asyncio.wait_for(second_reader.readline(), 2) == b"hello from backend 1\n"
        second.close()


@pytest.mark.parametrize(
    "splice",
    [pytest.param(True, marks=pytest.mark.skipif(not SPLICE_AVAILABLE, reason="Linux")), False],
    ids=["splice", "copy"],
)
async def test_bulk_and_half_close_through_the_balancer(splice: bool) -> None:
    """The client sends 16 MiB, shuts down writing, and still reads the whole echo back."""
    data = random.Random(4).randbytes(16 << 20)
    async with backends(hello_backend("1")) as targets, balancer(*targets, splice=splice) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        assert await reader.readline() == b"hello from backend 1\n"

        async def send() -> None:
            writer.write(data)
            await writer.drain()
            writer.write_eof()

        _, echoed = await asyncio.gather(send(), reader.read(-1))
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
        writer.close()
        assert lb.counters["bytes_in"] == len(data)


async def test_idle_timeout_closes_a_silent_connection() -> None:
    async with backends(hello_backend("1")) as targets, balancer(*targets, idle_timeout_s=0.2) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        assert await reader.readline() == b"hello from backend 1\n"
        assert await asyncio.wait_for(reader.read(), 2) == b""
        writer.close()


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_the_proxy_header_gives_the_backend_the_clients_address(version: str) -> None:
    async with backends(proxy_aware) as targets, balancer(*targets, proxy_protocol=version) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        writer.write(b"first bytes")
        client, balancer_address = writer.get_extra_info("sockname"), lb.address
        line = (await asyncio.wait_for(reader.readline(), 2)).decode().strip()
        assert line == f"{version} {client} {balancer_address} b'first bytes'"
        writer.close()


async def test_reload_applies_to_new_connections_and_keeps_open_ones() -> None:
    async with backends(hello_backend("1"), hello_backend("2")) as (one, two), balancer(one) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        assert await reader.readline() == b"hello from backend 1\n"
        lb.reload(L4Config(listen=("127.0.0.1", 9), backends=(two,)))
        assert lb.config.listen == ("127.0.0.1", 0)  # the listen address cannot move
        assert await greeting(lb.address) == "hello from backend 2"
        writer.write(b"still here")
        assert await reader.readexactly(10) == b"still here"
        writer.close()


async def test_drain_waits_for_open_connections_then_cuts_them_at_the_deadline() -> None:
    async with backends(hello_backend("1")) as targets:
        lb = L4Balancer(L4Config(listen=("127.0.0.1", 0), backends=tuple(targets)))
        await lb.start()
        reader, writer = await asyncio.open_connection(*lb.address)
        assert await reader.readline() == b"hello from backend 1\n"
        draining = asyncio.create_task(lb.drain(0.3))
        await asyncio.sleep(0.1)
        with pytest.raises(OSError):
            await asyncio.open_connection(*lb.address)
        writer.write(b"during the drain")
        assert await reader.readexactly(16) == b"during the drain"
        assert await draining == 1
        assert await asyncio.wait_for(reader.read(), 1) == b""
        writer.close()

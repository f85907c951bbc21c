"""`wirelab lb l4` as a real child process: signals, reload from the TOML file, refused configurations."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from tests.proxy.l4_backends import backends, hello_backend
from wirelab.proto.balance import Backend


class Balancer:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.address = ("127.0.0.1", 0)

    async def wait_for_line(self, text: str) -> str:
        """Read the log until a line holding `text`; the log is how the process reports events."""
        assert self.process.stderr is not None
        async with asyncio.timeout(4):
            while line := (await self.process.stderr.readline()).decode():
                if text in line:
                    return line
        raise AssertionError(f"the balancer exited before logging {text!r}")


@asynccontextmanager
async def lb_l4(*args: str) -> AsyncIterator[Balancer]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wirelab",
        "lb",
        "l4",
        "--listen",
        "127.0.0.1:0",
        *args,
        stderr=subprocess.PIPE,
    )
    balancer = Balancer(process)
    try:
        line = await balancer.wait_for_line("listening on ")
        balancer.address = ("127.0.0.1", int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1]))
        yield balancer
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def toml(*targets: Backend, extra: str = "") -> str:
    tables = "".join(f'[[backends]]\naddress = "{b.address}"\n' for b in targets)
    return f"{extra}\n{tables}"


async def test_sigterm_stops_accepting_and_lets_open_connections_finish() -> None:
    async with backends(hello_backend("1")) as (one,), lb_l4("--backend", one.address) as lb:
        reader, writer = await asyncio.open_connection(*lb.address)
        assert await reader.readline() == b"hello from backend 1\n"
        lb.process.send_signal(signal.SIGTERM)
        await lb.wait_for_line("draining 1 connections")
        try:
            await asyncio.open_connection(*lb.address)
            raise AssertionError("a draining balancer accepted a new connection")
        except OSError:
            pass
        writer.write(b"finishing up")
        assert await reader.readexactly(12) == b"finishing up"
        writer.write_eof()
        assert await reader.read() == b""
        writer.close()
        assert await asyncio.wait_for(lb.process.wait(), 3) == 0


async def test_sigterm_cuts_connections_still_open_at_the_drain_deadline() -> None:
    async with (
        backends(hello_backend("1")) as (one,),
        lb_l4("--backend", one.address, "--drain-timeout", "0.3") as lb,
    ):
        reader, writer = await asyncio.open_connection(*lb.address)
        assert await reader.readline() == b"hello from backend 1\n"
        lb.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(reader.read(), 3) == b""
        assert await asyncio.wait_for(lb.process.wait(), 3) == 0
        assert "1 connections cut" in await lb.wait_for_line("stopped")
        writer.close()


async def test_sighup_reloads_the_file_without_dropping_open_connections(tmp_path: Path) -> None:
    config = tmp_path / "l4.toml"
    async with backends(hello_backend("1"), hello_backend("2")) as (one, two):
        config.write_text(toml(one))
        async with lb_l4("--config", str(config)) as lb:
            reader, writer = await asyncio.open_connection(*lb.address)
            assert await reader.readline() == b"hello from backend 1\n"

            config.write_text(toml(two, extra='algorithm = "least-connections"'))
            lb.process.send_signal(signal.SIGHUP)
            await lb.wait_for_line("reloaded: 1 backends, least-connections")
            new_reader, new_writer = await asyncio.open_connection(*lb.address)
            assert await new_reader.readline() == b"hello from backend 2\n"
            new_writer.close()

            config.write_text(toml(one, extra="max_connection = 5"))
            lb.process.send_signal(signal.SIGHUP)
            assert "max_connection: unknown setting" in await lb.wait_for_line("reload refused")
            new_reader, new_writer = await asyncio.open_connection(*lb.address)
            assert await new_reader.readline() == b"hello from backend 2\n"
            new_writer.close()

            writer.write(b"across two reloads")
            assert await reader.readexactly(18) == b"across two reloads"
            writer.close()


def test_a_bad_configuration_is_refused_at_start_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "l4.toml"
    config.write_text('listen = "127.0.0.1:0"\n[[backends]]\naddress = "127.0.0.1:9"\nweight = 0\n')
    result = subprocess.run(
        [sys.executable, "-m", "wirelab", "lb", "l4", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 2
    assert "backends[0].weight: must be greater than 0" in result.stderr

"""Real TCP backends on loopback for the layer 4 balancer's tests, and a client to talk through it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from wirelab.proto.balance import Backend
from wirelab.proto.proxyproto import ProxyHeaderReader

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def hello_backend(name: str) -> Handler:
    """Greets with "hello from backend NAME", then echoes until the client's FIN, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"hello from backend {name}\n".encode())
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.close()

    return handle


async def proxy_aware(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the PROXY header first, then says which client address it names, and what followed it."""
    header_reader = ProxyHeaderReader()
    header = None
    while header is None:
        header = header_reader.receive_data(await reader.read(256))
    writer.write(
        f"v{header.version} {header.source} {header.destination} {header_reader.rest!r}\n".encode()
    )
    await writer.drain()
    writer.close()


@asynccontextmanager
async def backends(*handlers: Handler, port: int = 0) -> AsyncIterator[list[Backend]]:
    """One server per handler on 127.0.0.1, as `Backend`s for the balancer's configuration."""
    async with AsyncExitStack() as stack:
        found = []
        for handler in handlers:
            server = await asyncio.start_server(handler, "127.0.0.1", port)
            await stack.enter_async_context(server)
            found.append(Backend("127.0.0.1", server.sockets[0].getsockname()[1]))
        yield found


def dead_port() -> int:
    """A loopback port nobody listens on (connects are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def blackhole() -> AsyncIterator[Backend]:
    """A backend whose connects hang: its accept queue is full, so the kernel drops new SYNs."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = [socket.socket() for _ in range(4)]
    try:
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
        await asyncio.sleep(0.05)
        yield Backend("127.0.0.1", listener.getsockname()[1])
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def greeting(address: tuple[str, int]) -> str:
    """Connect through the balancer, return the backend's greeting, close."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        return (await asyncio.wait_for(reader.readline(), 2)).decode().strip()
    finally:
        writer.close()
        await writer.wait_closed()

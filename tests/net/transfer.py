"""A TCP copy between two sockets of one network namespace: what the loss and delay tests send through."""

from __future__ import annotations

import asyncio

from wirelab.net.netns import Namespace


async def copy_through(namespace: Namespace, data: bytes) -> bytes:
    """Send `data` over one TCP connection inside `namespace`; what the other end read, to its EOF."""
    listener = namespace.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    received = asyncio.get_running_loop().create_future()

    async def take(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.read())
        writer.close()

    server = await asyncio.start_server(take, sock=listener)
    client = namespace.socket()
    await asyncio.get_running_loop().sock_connect(client, listener.getsockname())
    _, writer = await asyncio.open_connection(sock=client)
    writer.write(data)
    writer.write_eof()
    result: bytes = await asyncio.wait_for(received, 60)
    writer.close()
    server.close()
    await server.wait_closed()
    return result

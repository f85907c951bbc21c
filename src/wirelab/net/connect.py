"""Opening TCP connections for the proxies and clients that own their sockets (splice needs the raw
file descriptor, so these are plain non-blocking sockets, not asyncio transports)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

__all__ = ["open_tcp"]


async def open_tcp(host: str, port: int, *, within_s: float) -> socket.socket:
    """A connected non-blocking socket to the first of `host`'s addresses that accepts, all within
    `within_s`; IP literals skip the resolver (a thread hop per connection)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(within_s):
        try:
            version = ipaddress.ip_address(host).version
            addresses: list[tuple[int, tuple[Any, ...]]] = [
                (socket.AF_INET6 if version == 6 else socket.AF_INET, (host, port))
            ]
        except ValueError:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = [(info[0], info[4]) for info in infos]
        error = OSError(f"no address for {host}")
        for family, address in addresses:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_connect(sock, address)
            except OSError as failure:
                sock.close()
                error = failure
                continue
            except BaseException:
                sock.close()
                raise
            return sock
        raise error

"""The servers a fan-out run can measure, each behind the same small interface.

Theory of operation: the measurement needs four things of a server under test, whatever it is: its
pid (for psutil), its port (for the subscribers), a way to publish one login and learn its version,
and a count of the subscribers the server itself holds (connected is not yet subscribed). Our server
answers those with `POST /logins` and `/healthz` (feed followers plus long-poll waiters); the
websockets peer with its `GET /publish` and `GET /stats` control routes. `open_target` starts the
right child process and always stops it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import httpx

from wirelab.bench.peer import PeerProcess
from wirelab.testing import ServerProcess, free_port

__all__ = ["PEER", "PeerTarget", "Target", "WirelabTarget", "open_target"]

PEER = "websockets-broadcast"


class Target(Protocol):
    """A server under test, as the measurement sees it: a pid, a port and two control calls."""

    @property
    def pid(self) -> int: ...

    @property
    def port(self) -> int: ...

    async def publish(self, http: httpx.AsyncClient, user: str) -> int: ...

    async def subscribers(self, http: httpx.AsyncClient) -> int: ...


class WirelabTarget:
    def __init__(self, server: ServerProcess) -> None:
        self._server = server

    @property
    def pid(self) -> int:
        return self._server.pid

    @property
    def port(self) -> int:
        return self._server.port

    async def publish(self, http: httpx.AsyncClient, user: str) -> int:
        response = await http.post("/logins", json={"user": user})
        response.raise_for_status()
        version: int = response.json()["version"]
        return version

    async def subscribers(self, http: httpx.AsyncClient) -> int:
        response = await http.get("/healthz")
        response.raise_for_status()
        feed = response.json()["feed"]
        return int(feed["followers"] + feed["waiters"])


class PeerTarget:
    def __init__(self, peer: PeerProcess) -> None:
        self._peer = peer

    @property
    def pid(self) -> int:
        return self._peer.pid

    @property
    def port(self) -> int:
        return self._peer.port

    async def publish(self, http: httpx.AsyncClient, user: str) -> int:
        response = await http.get("/publish", params={"user": user})
        response.raise_for_status()
        version: int = response.json()["version"]
        return version

    async def subscribers(self, http: httpx.AsyncClient) -> int:
        response = await http.get("/stats")
        response.raise_for_status()
        return int(response.json()["subscribers"])


@contextlib.contextmanager
def open_target(impl: str, work_dir: Path) -> Iterator[Target]:
    """Start the server `impl` needs as a child process; stop it on the way out, whatever happens.

    Our server logs warnings only: ten thousand "connection open" lines would be work the bench
    measures but no user asked for.
    """
    if impl == PEER:
        with PeerProcess(free_port(), log_path=work_dir / "peer.log") as peer:
            yield PeerTarget(peer)
        return
    with ServerProcess(work_dir / impl, "--log-level", "warning") as server:
        yield WirelabTarget(server)

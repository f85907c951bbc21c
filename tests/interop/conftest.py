"""Fixtures for the interop tests: the Node peers, started per test and always stopped, and the server
speaking every HTTP version.

Theory of operation: the Python test drives and asserts; the peer only speaks the protocol (see
interop_peers.py). A missing peer skips locally and fails in CI (`bash .ci/peers.sh` installs them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import unavailable
from tests.interop.interop_peers import JS, NODE_MODULES, JsonLinesPeer, peer_tool
from wirelab.testing import ServerProcess, free_tcp_and_udp_port


@pytest.fixture(scope="session")
def node() -> str:
    """Node with the npm peers of tests/interop/package.json installed beside it."""
    path = peer_tool("node")
    for package in ("ws", "eventsource"):
        if not (NODE_MODULES / package / "package.json").exists():
            unavailable(f"npm package {package} is missing: npm ci --prefix tests/interop")
    return path


@pytest.fixture
def node_peer(node: str) -> Iterator[Callable[..., JsonLinesPeer]]:
    """Start `js/SCRIPT` with arguments; every peer started is closed after the test."""
    peers: list[JsonLinesPeer] = []

    def start(script: str, *args: str) -> JsonLinesPeer:
        peers.append(JsonLinesPeer([node, str(JS / script), *args]))
        return peers[-1]

    yield start
    for peer in peers:
        peer.close()


@dataclass(frozen=True)
class VersionsServer:
    """`wirelab up --http 1.1,2,3`: HTTP/1.1 and h2c on `url`; HTTP/1.1 and HTTP/2 over TLS (ALPN) on
    TCP `tls_port` and HTTP/3 on UDP `tls_port`, all under the lab CA's `ca`."""

    process: ServerProcess
    tls_port: int
    ca: Path

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def tls_url(self) -> str:
        return f"https://127.0.0.1:{self.tls_port}"


@pytest.fixture(scope="module")
def versions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VersionsServer]:
    """One `wirelab up --http 1.1,2,3` per test module."""
    data_dir = tmp_path_factory.mktemp("versions")
    tls_port = free_tcp_and_udp_port()
    arguments = ("--http", "1.1,2,3", "--tls-port", str(tls_port), "--heartbeat", "0.5")
    with ServerProcess(data_dir, *arguments) as process:
        yield VersionsServer(process, tls_port, data_dir / "ca" / "ca.pem")

"""Fixtures for the interop tests: the Node peers, started per test and always stopped.

Theory of operation: the Python test drives and asserts; the peer only speaks the protocol (see
interop_peers.py). A missing peer skips locally and fails in CI (`bash .ci/peers.sh` installs them).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.helpers import unavailable
from tests.interop.interop_peers import JS, NODE_MODULES, JsonLinesPeer, peer_tool


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

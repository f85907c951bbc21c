"""Packet loss in a network namespace of our own, measured with real TCP and UDP traffic inside it.

These need root and the ip and nft commands; elsewhere they skip, saying which is missing.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.net.transfer import copy_through
from wirelab.bench.impair import drain_datagrams
from wirelab.errors import ConfigError
from wirelab.net import netns
from wirelab.net.netns import LossCounters, Namespace, NamespaceUnavailable, lossy_namespace


@pytest.fixture
def lossy() -> Iterator[Namespace]:
    try:
        with lossy_namespace(0.03) as namespace:
            yield namespace
    except NamespaceUnavailable as exc:
        pytest.skip(str(exc))


def _namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout


def _udp_flood(namespace: Namespace, count: int, *, port: int = 0) -> tuple[int, int]:
    """`count` datagrams to a receiver inside, in bursts it can keep up with; (port, received)."""
    receiver = namespace.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender = namespace.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with receiver, sender:
        receiver.bind(("127.0.0.1", port))
        address = receiver.getsockname()
        received = 0
        for n in range(count):
            sender.sendto(n.to_bytes(4, "big"), address)
            if n % 100 == 99 or n == count - 1:
                time.sleep(0.0005)
                received += drain_datagrams(receiver)
        time.sleep(0.01)
        return address[1], received + drain_datagrams(receiver)


def test_udp_loses_the_share_set_and_the_kernel_counts_it(lossy: Namespace) -> None:
    """3 % of 20,000 datagrams: 600 expected, sigma 24; the bound is 5 sigma."""
    _, received = _udp_flood(lossy, 20_000)
    lost = 20_000 - received
    assert abs(lost - 600) < 5 * 24
    counters = lossy.counters()
    assert counters.dropped == lost
    assert counters.seen == 20_000


def test_tcp_still_delivers_every_byte_in_order_by_retransmitting(lossy: Namespace) -> None:
    data = random.Random(3).randbytes(8 << 20)
    before = lossy.snmp()["RetransSegs"]

    assert hashlib.sha256(asyncio.run(copy_through(lossy, data))).digest() == hashlib.sha256(data).digest()
    assert lossy.snmp()["RetransSegs"] - before > 0
    assert lossy.counters().dropped > 0


def test_the_loss_can_be_changed_and_limited_to_ports(lossy: Namespace) -> None:
    lossy.set_loss(0)
    assert _udp_flood(lossy, 2000)[1] == 2000
    assert lossy.counters() == LossCounters(seen=2000, dropped=0)

    lossy.set_loss(1.0, ports=[9])  # everything to or from port 9, nothing else
    assert _udp_flood(lossy, 500)[1] == 500
    assert _udp_flood(lossy, 500, port=9)[1] == 0


def test_the_namespace_has_its_own_loopback_and_runs_commands(lossy: Namespace) -> None:
    links = lossy.run("ip", "-o", "link")
    assert links.count("\n") == 1 and "lo:" in links and "mtu 1500" in links
    inside = subprocess.run(lossy.argv("cat", "/proc/net/snmp"), capture_output=True, text=True, check=True)
    assert "RetransSegs" in inside.stdout


def test_it_is_deleted_afterwards_even_after_an_error() -> None:
    try:
        with pytest.raises(RuntimeError), lossy_namespace(0.01) as namespace:
            assert namespace.name in _namespaces()
            raise RuntimeError("boom")
    except NamespaceUnavailable as exc:
        pytest.skip(str(exc))
    assert namespace.name not in _namespaces()


def test_a_namespace_left_by_a_dead_process_is_swept(lossy: Namespace) -> None:
    stale = "wirelab-999999999-dead00"  # above any pid_max: that process cannot be running
    subprocess.run(["ip", "netns", "add", stale], check=True)
    assert netns.sweep_stale() == [stale]
    assert stale not in _namespaces() and lossy.name in _namespaces()  # ours lives: its pid is ours


def test_nonsense_is_refused(lossy: Namespace) -> None:
    with pytest.raises(ConfigError, match="between 0 and 1"):
        lossy.set_loss(3)
    with pytest.raises(ConfigError, match="ports"):
        lossy.set_loss(0.1, ports=[70000])


def test_without_root_it_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(netns.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    with pytest.raises(NamespaceUnavailable, match="need root"), lossy_namespace():
        pass


def test_without_nft_it_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netns.shutil, "which", lambda tool: None if tool == "nft" else "/usr/sbin/ip")
    with pytest.raises(NamespaceUnavailable, match="need nft"), lossy_namespace():
        pass

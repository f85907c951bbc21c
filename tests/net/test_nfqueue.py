"""Packets held in the kernel's path by the NFQUEUE driver: ping and TCP feel the delay as RTT, the
link's loss is repaired by TCP itself, and everything is undone afterwards. Root, ip, nft, iptables."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
import shutil
import socket
import time
from collections.abc import Iterator

import pytest

from tests.net.transfer import copy_through
from wirelab.net.netns import Namespace, NamespaceUnavailable, lossy_namespace
from wirelab.net.nfqueue import delay_packets
from wirelab.proto.impair import Impairment


@pytest.fixture
def namespace() -> Iterator[Namespace]:
    try:
        with lossy_namespace() as made:
            yield made
    except NamespaceUnavailable as exc:
        pytest.skip(str(exc))


def test_a_ping_takes_both_delays(namespace: Namespace) -> None:
    if shutil.which("ping") is None:
        pytest.skip("ping is not installed (apt-get install iputils-ping)")
    with delay_packets(namespace, Impairment(delay_s=0.015), Impairment(delay_s=0.005)) as stats:
        output = namespace.run("ping", "-c", "5", "-i", "0.05", "127.0.0.1")
    match = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/", output)
    assert match, output
    assert float(match[1]) >= 20 - 1 and float(match[3]) < 20 + 100
    assert stats[0].up.admitted == 5 and stats[0].down.admitted == 5


def test_udp_datagrams_wait_in_the_kernel_for_their_release(namespace: Namespace) -> None:
    server = namespace.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client = namespace.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with server, client, delay_packets(namespace, Impairment(delay_s=0.010)):
        server.bind(("127.0.0.1", 0))
        server.setblocking(True)
        client.setblocking(True)
        client.settimeout(5)
        started = time.perf_counter()
        client.sendto(b"ping", server.getsockname())
        data, peer = server.recvfrom(64)
        server.sendto(data, peer)
        assert client.recv(64) == b"ping"
        assert 0.020 - 0.001 <= time.perf_counter() - started < 0.020 + 0.5


def test_tcp_repairs_the_links_loss_and_the_data_arrives_intact(namespace: Namespace) -> None:
    data = random.Random(8).randbytes(2 << 20)
    lossy = Impairment(delay_s=0.002, loss=0.02, seed=3)
    before = namespace.snmp()["RetransSegs"]

    with delay_packets(namespace, lossy) as stats:
        echoed = asyncio.run(copy_through(namespace, data))
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
    assert stats[0].up.dropped > 0
    assert namespace.snmp()["RetransSegs"] - before >= stats[0].up.dropped // 2


def test_the_rules_go_when_the_block_ends(namespace: Namespace) -> None:
    with delay_packets(namespace, Impairment(delay_s=0.001)):
        assert "NFQUEUE" in namespace.run("iptables", "-S")
    assert "NFQUEUE" not in namespace.run("iptables", "-S") + namespace.run("ip6tables", "-S")

"""Delay (and rate, jitter, loss) in the packets' own path: every packet of a namespace is held in the
kernel until wirelab.proto.impair's schedule lets it go, so TCP and QUIC feel the RTT themselves.

Theory of operation: the user-space proxy (wirelab.net.impair) splits a TCP connection in two, each
leg with loopback's RTT, so TCP's loss recovery never waits a round trip; to compare HTTP/2 over TCP
with HTTP/3 over QUIC fairly, the delay must be in the packets' path. In a namespace of our own
(wirelab.net.netns), rules on the input hook queue every packet (`NFQUEUE --queue-num 0` for the
direction of the connection's opener, conntrack's ORIGINAL, queue 1 for the REPLY direction), and
`PacketQueue` takes both queues on a NETLINK_NETFILTER socket made inside the namespace. Each queued
packet (we ask for its first bytes only, for its IP length) is admitted to its direction's `Link`;
its verdict is sent when the link releases it (accept), or at once (drop) when the link loses it.
On loopback a packet passes the input hook once, so a ping's RTT grows by the up delay plus the down.

The queue runs in a child process of its own (`delay_packets` starts `main` in a Python inside the
namespace): the packets of the whole namespace wait on its event loop, so it must never
wait for the GIL behind a busy bench or an HTTP/3 stack in the same process. It says "ready" once
both queues are bound, after which the parent installs the rules; on SIGTERM it lets every held
packet go and prints its statistics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from wirelab.errors import ProtocolError
from wirelab.net.impair import Releaser
from wirelab.net.netns import Namespace, NamespaceError, NamespaceUnavailable
from wirelab.proto import nfqueue
from wirelab.proto.impair import Impairment, Link, LinkStats

__all__ = ["PacketQueue", "QueueStats", "delay_packets", "main"]

NETLINK_NETFILTER = 12
UP, DOWN = 0, 1
"""Queue numbers: packets of the connection's opener, and the replies."""
COPY_BYTES = 64
MAX_HELD = 65536
"""Packets the kernel may hold per queue (1 Gbit/s x 100 ms of 1500-byte packets is 8,300)."""
RECEIVE_BUFFER = 16 << 20
_SOL_NETLINK, _NETLINK_NO_ENOBUFS = 270, 5
_SO_RCVBUFFORCE = 33


@dataclasses.dataclass(frozen=True, slots=True)
class QueueStats:
    up: LinkStats
    down: LinkStats


class PacketQueue:
    """Verdicts for the packets of queues UP and DOWN on a netlink socket, when their links say."""

    def __init__(self, sock: socket.socket, up: Impairment, down: Impairment) -> None:
        self._sock = sock
        self._links = {UP: Link(up, ordered=False), DOWN: Link(down, ordered=False)}
        self._held: set[tuple[int, int]] = set()
        self._releaser: Releaser | None = None

    def bind(self) -> None:
        """Take both queues (blocking, before the loop reads the socket); NamespaceError if refused."""
        self._sock.bind((0, 0))
        self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, RECEIVE_BUFFER)
        self._sock.setsockopt(_SOL_NETLINK, _NETLINK_NO_ENOBUFS, 1)
        requests: list[bytes] = []
        for queue in (UP, DOWN):
            requests += [
                nfqueue.bind(queue, seq=len(requests) + 1),
                nfqueue.set_copy(queue, COPY_BYTES, seq=len(requests) + 2),
                nfqueue.set_max_length(queue, MAX_HELD, seq=len(requests) + 3),
            ]
        for request in requests:
            self._sock.send(request)
        self._wait_acks(len(requests))

    def _wait_acks(self, count: int) -> None:
        self._sock.settimeout(5)
        acks = 0
        while acks < count:
            for message in nfqueue.parse(self._sock.recv(65536)):
                if isinstance(message, nfqueue.Ack):
                    if message.errno:
                        raise NamespaceError(
                            f"nfqueue request {message.seq} refused: errno {message.errno}"
                        )
                    acks += 1
        self._sock.setblocking(False)

    def start(self) -> None:
        self._releaser = Releaser()
        asyncio.get_running_loop().add_reader(self._sock, self._receive)

    def release_all(self) -> None:
        """Let every held packet go now (stopping: nothing should be lost on the way out)."""
        if self._releaser is not None:
            self._releaser.close()
            asyncio.get_running_loop().remove_reader(self._sock)
        for queue, packet_id in list(self._held):
            self._verdict(queue, packet_id, True)

    def statistics(self) -> QueueStats:
        return QueueStats(self._links[UP].statistics(), self._links[DOWN].statistics())

    def _receive(self) -> None:
        assert self._releaser is not None
        while True:
            try:
                data = self._sock.recv(1 << 20)
            except BlockingIOError:
                return
            now = asyncio.get_running_loop().time()
            for message in nfqueue.parse(data):
                if not isinstance(message, nfqueue.QueuedPacket):
                    continue
                key = (message.queue, message.packet_id)
                when = self._links[message.queue].admit(message.size, now)
                if when is None:
                    self._sock.send(nfqueue.verdict(message.queue, message.packet_id, accept=False))
                else:
                    self._held.add(key)
                    self._releaser.at(when, partial(self._verdict, *key, True))

    def _verdict(self, queue: int, packet_id: int, accept: bool) -> None:
        if (queue, packet_id) in self._held:
            self._held.discard((queue, packet_id))
            with contextlib.suppress(OSError):
                self._sock.send(nfqueue.verdict(queue, packet_id, accept=accept))


@contextmanager
def delay_packets(
    namespace: Namespace, up: Impairment, down: Impairment | None = None
) -> Iterator[list[QueueStats]]:
    """Every packet in `namespace` impaired: `up` for the packets of whoever opened the connection (or
    sent the first datagram, or the ping), `down` (default: the same) for the replies.

    Yields a list that holds the queue's `QueueStats` once the block is over.
    """
    down = up if down is None else down
    if shutil.which("iptables") is None or shutil.which("ip6tables") is None:
        raise NamespaceUnavailable("delaying packets needs iptables (apt-get install iptables)")
    run = "from wirelab.net.nfqueue import main; main()"  # not -m: the package imports this module first
    argv = [sys.executable, "-c", run, _encode(up), _encode(down)]
    child = subprocess.Popen(namespace.argv(*argv), stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    results: list[QueueStats] = []
    try:
        if child.stdout.readline().strip() != "ready":
            raise NamespaceError(f"the packet queue did not start (exit status {child.wait()})")
        _queue_rules(namespace, "-A")
        yield results
    finally:
        with contextlib.suppress(NamespaceError):
            _queue_rules(namespace, "-D")
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=10)
    if out.strip():
        stats = json.loads(out)
        results.append(QueueStats(LinkStats(**stats["up"]), LinkStats(**stats["down"])))


def _queue_rules(namespace: Namespace, action: str) -> None:
    """Add (-A) or delete (-D) the rules that queue every packet by its direction: iptables rules
    (iptables-nft's xt NFQUEUE target), since kernels without nft's own queue expression are common.

    TCP, UDP and the rest are held on the way in: a segment held on the way out would still count
    against its sender's TCP Small Queues budget (about a millisecond of its pacing rate), and the
    sender's rate would collapse. ICMP is held on the way out, because ping reads the kernel's receive
    timestamp, which loopback stamps before the input hook: held there, the reply's delay would not
    show in ping's RTT. Either way each packet is held once.
    """
    for tool, icmp in (("iptables", "icmp"), ("ip6tables", "ipv6-icmp")):
        for chain, protocol in (("INPUT", ["!", "-p", icmp]), ("OUTPUT", ["-p", icmp])):
            for direction, queue in (("ORIGINAL", UP), ("REPLY", DOWN)):
                match = [*protocol, "-m", "conntrack", "--ctdir", direction]
                namespace.run(tool, action, chain, *match, "-j", "NFQUEUE", "--queue-num", str(queue))


def _encode(impairment: Impairment) -> str:
    return json.dumps(dataclasses.asdict(impairment))


async def _serve(up: Impairment, down: Impairment) -> QueueStats:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    with sock:
        queue = PacketQueue(sock, up, down)
        queue.bind()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        queue.start()
        print("ready", flush=True)
        await stop.wait()
        queue.release_all()
        return queue.statistics()


def main() -> None:
    parser = argparse.ArgumentParser(description="The packet queue of wirelab.net.nfqueue.delay_packets.")
    parser.add_argument("up", type=lambda text: Impairment(**json.loads(text)))
    parser.add_argument("down", type=lambda text: Impairment(**json.loads(text)))
    args = parser.parse_args()
    try:
        stats = asyncio.run(_serve(args.up, args.down))
    except (OSError, NamespaceError, ProtocolError) as exc:
        sys.exit(f"wirelab packet queue: {exc}")
    print(json.dumps(dataclasses.asdict(stats)), flush=True)

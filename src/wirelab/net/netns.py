"""A network namespace of our own, whose kernel drops a share of the packets: loss that TCP feels.

Theory of operation: a proxy that terminates TCP cannot lose bytes (wirelab.net.impair), so loss on
TCP has to happen to packets, in the kernel, where TCP's own retransmission repairs it. `ip netns add`
makes a namespace with nothing but its own loopback, brought up at `mtu` 1500 and with one segment
per packet (gso_max_segs 1): otherwise loopback carries TCP in 64 KiB super-packets and one drop
would cost forty segments, where on a real network it costs one. An nftables table in it sends every
packet as it arrives (the `input` hook: on loopback each packet passes it once, and its sender never
hears of a drop, where a drop on the way out would fail its sendto with EPERM) to a `loss` chain that
drops it when `numgen random mod 1000000` falls below the loss in parts per million. With `ports`,
only packets from or to those ports are dropped. Counters on the chain say how many packets were
seen and dropped since the loss was last set. Nothing outside the namespace is touched, and
`lossy_namespace` deletes it on the way out, whatever happened.

Code runs inside in two ways: a process started with `Namespace.argv(...)` (`ip netns exec NAME
...`), or a socket made by `Namespace.socket(...)`: a socket belongs to the namespace its thread was
in when it was made, so this thread enters the namespace (setns(2) through libc, as Python 3.11 has
no os.setns), makes it and comes back; the socket then works with asyncio as any other.

It needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) and the `ip` and `nft` commands; without them
`NamespaceUnavailable` says which is missing, and tests skip with that reason.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from wirelab.errors import ConfigError, WirelabError

__all__ = [
    "LossCounters",
    "Namespace",
    "NamespaceError",
    "NamespaceUnavailable",
    "lossy_namespace",
    "sweep_stale",
]

TABLE = "wirelab"
SCALE = 1_000_000
"""The loss is drawn in parts per million."""
_CLONE_NEWNET = 0x40000000


class NamespaceError(WirelabError):
    """A command that manages the namespace failed; the message is its complaint."""


class NamespaceUnavailable(NamespaceError):
    """This machine or user cannot make network namespaces; the message says why."""


@dataclass(frozen=True, slots=True)
class LossCounters:
    """Packets the loss chain saw and dropped since the loss was last set."""

    seen: int
    dropped: int


class Namespace:
    """A network namespace made by `lossy_namespace`; `name` is what `ip netns` knows it by."""

    def __init__(self, name: str) -> None:
        self.name = name

    def argv(self, *command: str) -> list[str]:
        """`command` run inside: pass it to subprocess or asyncio.create_subprocess_exec."""
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, *command: str) -> str:
        """Run `command` inside and return its output; NamespaceError when it fails."""
        return _run(*self.argv(*command))

    @contextmanager
    def entered(self) -> Iterator[None]:
        """This thread in the namespace for the block (which must not await: other tasks would run
        in the namespace too). Sockets made inside stay in the namespace."""
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            there = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
            try:
                _setns(there)
            finally:
                os.close(there)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)

    def socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A non-blocking socket inside the namespace, for asyncio (`sock=`) or plain use."""
        with self.entered():
            sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        return sock

    def set_loss(self, loss: float, *, ports: Sequence[int] = ()) -> None:
        """Drop `loss` (0 to 1) of the packets, only those from or to `ports` if given; the counters
        start again from zero."""
        if not 0 <= loss <= 1:
            raise ConfigError(f"loss is a share between 0 and 1, not {loss}")
        if any(not 0 < port < 65536 for port in ports):
            raise ConfigError(f"ports are between 1 and 65535, not {list(ports)}")
        share = round(loss * SCALE)
        draw = (
            f"numgen random mod {SCALE} < {share} " if share < SCALE else ""
        )  # nft's numbers end below SCALE
        where = ", ".join(str(port) for port in ports)
        rules = (
            [f"th {end} {{ {where} }} goto loss" for end in ("dport", "sport")] if ports else ["goto loss"]
        )
        self.nft(
            f"flush chain inet {TABLE} incoming",
            f"flush chain inet {TABLE} loss",
            *(f"add rule inet {TABLE} incoming {rule}" for rule in rules),
            f"add rule inet {TABLE} loss counter",
            f"add rule inet {TABLE} loss {draw}counter drop",
        )

    def nft(self, *commands: str) -> None:
        """Apply nftables `commands` inside, in one transaction: all of them or none."""
        _run(*self.argv("nft", "-f", "-"), stdin="\n".join(commands))

    def counters(self) -> LossCounters:
        listing = json.loads(self.run("nft", "-j", "list", "chain", "inet", TABLE, "loss"))
        packets = [
            expr["counter"]["packets"]
            for item in listing["nftables"]
            if "rule" in item
            for expr in item["rule"]["expr"]
            if "counter" in expr
        ]
        return LossCounters(seen=packets[0], dropped=packets[1])

    def snmp(self, protocol: str = "Tcp") -> dict[str, int]:
        """The namespace's /proc/net/snmp figures for `protocol` (Tcp: RetransSegs, OutSegs...; Udp)."""
        with self.entered(), open("/proc/thread-self/net/snmp") as file:
            lines = [line.split() for line in file if line.startswith(f"{protocol}:")]
        names, values = lines[0][1:], lines[1][1:]
        return dict(zip(names, map(int, values), strict=True))


@contextmanager
def lossy_namespace(
    loss: float = 0.0, *, ports: Sequence[int] = (), mtu: int = 1500, prefix: str = "wirelab"
) -> Iterator[Namespace]:
    """A fresh namespace (loopback up, `mtu`) dropping `loss` of its packets; deleted afterwards."""
    _check_can()
    sweep_stale(prefix)
    namespace = Namespace(f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}")
    try:
        _run("ip", "netns", "add", namespace.name)
    except NamespaceError as exc:
        raise NamespaceUnavailable(str(exc)) from None
    try:
        namespace.run("ip", "link", "set", "lo", "mtu", str(mtu), "gso_max_segs", "1", "up")
        namespace.nft(
            f"add table inet {TABLE}",
            f"add chain inet {TABLE} incoming {{ type filter hook input priority 0; policy accept; }}",
            f"add chain inet {TABLE} loss",
        )
        namespace.set_loss(loss, ports=ports)
        yield namespace
    finally:
        subprocess.run(["ip", "netns", "delete", namespace.name], capture_output=True, check=False)


def sweep_stale(prefix: str = "wirelab") -> list[str]:
    """Delete namespaces `prefix`-PID-... whose process is gone (a run killed before it cleaned up)."""
    stale = []
    for line in _run("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == prefix and parts[1].isdigit() and not _alive(int(parts[1])):
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
            stale.append(name)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _check_can() -> None:
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        raise NamespaceUnavailable(
            f"network namespaces need {' and '.join(missing)} (apt-get install iproute2 nftables)"
        )
    if os.geteuid() != 0:
        raise NamespaceUnavailable("network namespaces need root (CAP_SYS_ADMIN and CAP_NET_ADMIN)")


def _run(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if done.returncode:
        raise NamespaceError(f"{' '.join(argv[:6])}: {done.stderr.strip()}")
    return done.stdout


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")

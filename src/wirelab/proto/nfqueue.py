"""The netfilter queue's netlink messages (NFQUEUE, linux/netfilter/nfnetlink_queue.h), both ways.

Theory of operation: an nftables `queue num N` rule hands each packet to whoever has bound queue N
on a NETLINK_NETFILTER socket, and the kernel holds the packet until that program sends a verdict:
accept (it goes on) or drop. Holding the verdict back is how a packet is delayed without leaving the
kernel's path, so TCP's timers see the delay as RTT. This module only builds and reads the messages:

- to the kernel: `bind` a queue, `set_copy` (how much of each packet to copy to us; we need only its
  IP header, for its length), `set_max_length` (how many packets the kernel may hold for us), and
  `verdict`;
- from it: `parse` cuts a received buffer into `QueuedPacket`s (queue, packet id, length on the
  wire) and `Ack`s (the answer to a request sent with NLM_F_ACK; errno 0 is success).

Every message is a netlink header (length, type, flags, sequence, port id; host byte order), a
netfilter header (family, version, queue number in network byte order), then attributes (length,
type, payload padded to four bytes); netfilter's own fields are in network byte order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from wirelab.errors import ProtocolError

__all__ = [
    "COPY_PACKET",
    "Ack",
    "QueuedPacket",
    "bind",
    "parse",
    "set_copy",
    "set_max_length",
    "verdict",
]

_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("!BBH")
_ATTR = struct.Struct("=HH")
_NLMSG_ERROR = 2
_NLM_F_REQUEST, _NLM_F_ACK = 1, 4
_SUBSYS_QUEUE = 3 << 8
_MSG_PACKET, _MSG_VERDICT, _MSG_CONFIG = 0, 1, 2
_CFG_CMD, _CFG_PARAMS, _CFG_QUEUE_MAXLEN = 1, 2, 3
_CMD_BIND = 1
_PACKET_HDR, _VERDICT_HDR, _PAYLOAD = 1, 2, 10
_NF_DROP, _NF_ACCEPT = 0, 1
COPY_PACKET = 2
"""Copy mode: the packet's first `copy_range` bytes come with it."""


@dataclass(frozen=True, slots=True)
class QueuedPacket:
    queue: int
    packet_id: int
    size: int
    """The packet's length on the wire (from its IP header), 0 if no IP header was copied."""


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    errno: int
    """0: done; else the kernel's refusal, as a positive errno."""


def bind(queue: int, *, seq: int) -> bytes:
    """Take queue `queue`: its packets come to this socket."""
    return _config(queue, seq, _attr(_CFG_CMD, struct.pack("!BxH", _CMD_BIND, 0)))


def set_copy(queue: int, copy_range: int, *, seq: int, mode: int = COPY_PACKET) -> bytes:
    return _config(queue, seq, _attr(_CFG_PARAMS, struct.pack("!IB", copy_range, mode)))


def set_max_length(queue: int, packets: int, *, seq: int) -> bytes:
    return _config(queue, seq, _attr(_CFG_QUEUE_MAXLEN, struct.pack("!I", packets)))


def verdict(queue: int, packet_id: int, *, accept: bool) -> bytes:
    body = _attr(_VERDICT_HDR, struct.pack("!II", _NF_ACCEPT if accept else _NF_DROP, packet_id))
    return _message(_SUBSYS_QUEUE | _MSG_VERDICT, _NLM_F_REQUEST, 0, queue, body)


def parse(data: bytes) -> list[QueuedPacket | Ack]:
    """Every message in `data` that we act on; others (there are none we asked for) are skipped."""
    try:
        return _parse(data)
    except struct.error as exc:
        raise ProtocolError(f"a netlink message too short for its fields: {exc}") from None


def _parse(data: bytes) -> list[QueuedPacket | Ack]:
    found: list[QueuedPacket | Ack] = []
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _, seq, _ = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size or offset + length > len(data):
            raise ProtocolError(f"netlink message of length {length} at {offset} of {len(data)} bytes")
        body = data[offset + _NLMSG.size : offset + length]
        if kind == _NLMSG_ERROR:
            found.append(Ack(seq, -struct.unpack_from("=i", body)[0]))
        elif kind == _SUBSYS_QUEUE | _MSG_PACKET:
            found.append(_packet(body))
        offset += _align(length)
    return found


def _packet(body: bytes) -> QueuedPacket:
    _, _, queue = _NFGEN.unpack_from(body)
    attrs = _attributes(body[_NFGEN.size :])
    if _PACKET_HDR not in attrs:
        raise ProtocolError("a queued packet without its header attribute")
    (packet_id,) = struct.unpack_from("!I", attrs[_PACKET_HDR])
    return QueuedPacket(queue, packet_id, _ip_length(attrs.get(_PAYLOAD, b"")))


def _ip_length(header: bytes) -> int:
    """IPv4: the total length field; IPv6: the payload length plus the 40-byte fixed header."""
    if len(header) >= 4 and header[0] >> 4 == 4:
        return int.from_bytes(header[2:4], "big")
    if len(header) >= 6 and header[0] >> 4 == 6:
        return int.from_bytes(header[4:6], "big") + 40
    return 0


def _attributes(data: bytes) -> dict[int, bytes]:
    attrs, offset = {}, 0
    while offset + _ATTR.size <= len(data):
        length, kind = _ATTR.unpack_from(data, offset)
        if length < _ATTR.size:
            raise ProtocolError(f"netlink attribute of length {length}")
        attrs[kind & 0x3FFF] = data[offset + _ATTR.size : offset + length]  # without the NLA_F_ flags
        offset += _align(length)
    return attrs


def _config(queue: int, seq: int, body: bytes) -> bytes:
    return _message(_SUBSYS_QUEUE | _MSG_CONFIG, _NLM_F_REQUEST | _NLM_F_ACK, seq, queue, body)


def _message(kind: int, flags: int, seq: int, queue: int, attrs: bytes) -> bytes:
    body = _NFGEN.pack(0, 0, queue) + attrs  # AF_UNSPEC, NFNETLINK_V0
    return _NLMSG.pack(_NLMSG.size + len(body), kind, flags, seq, 0) + body


def _attr(kind: int, payload: bytes) -> bytes:
    length = _ATTR.size + len(payload)
    return _ATTR.pack(length, kind) + payload + bytes(_align(length) - length)


def _align(length: int) -> int:
    return (length + 3) & ~3

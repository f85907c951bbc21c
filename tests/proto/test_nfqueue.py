"""The NFQUEUE netlink messages against their layouts in linux/netfilter/nfnetlink_queue.h, and what
the kernel sends back, built by hand."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirelab.errors import ProtocolError
from wirelab.proto.nfqueue import (
    COPY_PACKET,
    Ack,
    QueuedPacket,
    bind,
    parse,
    set_copy,
    set_max_length,
    verdict,
)

QUEUE_PACKET = (3 << 8) | 0  # NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + bytes(-length % 4)


def from_kernel(kind: int, body: bytes, seq: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), kind, 0, seq, 0) + body


def queued(queue: int, packet_id: int, payload: bytes) -> bytes:
    header = attr(1, struct.pack("!IHB", packet_id, 0x0800, 1) + b"\0")  # nfqnl_msg_packet_hdr
    return from_kernel(QUEUE_PACKET, struct.pack("!BBH", 2, 0, queue) + header + attr(10, payload))


def test_a_verdict_is_a_netlink_header_a_netfilter_header_and_the_verdict_attribute() -> None:
    message = verdict(1, 0x01020304, accept=True)
    assert len(message) == 32
    assert struct.unpack_from("=IHHII", message) == (32, (3 << 8) | 1, 1, 0, 0)  # NLM_F_REQUEST
    assert struct.unpack_from("!BBH", message, 16) == (0, 0, 1)  # AF_UNSPEC, v0, queue 1
    assert struct.unpack_from("=HH", message, 20) == (12, 2)  # NFQA_VERDICT_HDR
    assert struct.unpack_from("!II", message, 24) == (1, 0x01020304)  # NF_ACCEPT, packet id
    assert struct.unpack_from("!I", verdict(1, 7, accept=False), 24) == (0,)  # NF_DROP


def test_config_requests_ask_for_an_ack_and_pad_their_attributes() -> None:
    command = bind(5, seq=9)
    assert struct.unpack_from("=IHHII", command) == (28, (3 << 8) | 2, 1 | 4, 9, 0)
    assert command[-8:] == struct.pack("=HH", 8, 1) + bytes([1, 0, 0, 0])  # NFQNL_CFG_CMD_BIND
    params = set_copy(5, 64, seq=10)
    assert struct.unpack_from("=HH", params, 20) == (9, 2) and len(params) % 4 == 0
    assert params[24:29] == struct.pack("!IB", 64, COPY_PACKET)
    assert set_max_length(5, 1000, seq=11)[-4:] == struct.pack("!I", 1000)


def test_queued_packets_are_read_with_their_ip_length() -> None:
    ipv4 = bytes([0x45, 0]) + (1500).to_bytes(2, "big") + bytes(60)
    ipv6 = bytes([0x60, 0, 0, 0]) + (1000).to_bytes(2, "big") + bytes(58)
    data = queued(0, 42, ipv4) + queued(1, 43, ipv6) + queued(1, 44, b"")
    assert parse(data) == [QueuedPacket(0, 42, 1500), QueuedPacket(1, 43, 1040), QueuedPacket(1, 44, 0)]


def test_acks_carry_the_request_and_its_errno() -> None:
    data = from_kernel(2, struct.pack("=i", 0), seq=3) + from_kernel(2, struct.pack("=i", -1), seq=4)
    assert parse(data) == [Ack(3, 0), Ack(4, 1)]  # 1: EPERM


def test_other_messages_are_skipped() -> None:
    assert parse(from_kernel(3, b"")) == []  # NLMSG_DONE


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("=IHHII", 8, 2, 0, 0, 0),  # shorter than its own header
        struct.pack("=IHHII", 64, 2, 0, 0, 0),  # longer than the buffer
        from_kernel(QUEUE_PACKET, struct.pack("!BBH", 2, 0, 0) + attr(10, b"")),  # no packet header
    ],
)
def test_broken_messages_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse(data)


@given(st.sampled_from([2, QUEUE_PACKET, 3]), st.binary(max_size=100), st.binary(max_size=100))
def test_any_body_parses_or_raises_a_protocol_error(kind: int, body: bytes, tail: bytes) -> None:
    """What the kernel sends is trusted, but a wrong layout must fail loudly, never as a struct.error."""
    with contextlib.suppress(ProtocolError):
        parse(from_kernel(kind, body) + tail)

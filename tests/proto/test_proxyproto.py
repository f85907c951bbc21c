"""PROXY protocol headers, against the examples and layouts of HAProxy's proxy-protocol.txt."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from wirelab.errors import ProtocolError
from wirelab.proto.proxyproto import V2_SIGNATURE, ProxyHeader, ProxyHeaderReader, encode_v1, encode_v2

Address = tuple[str, int]
SRC, DST = ("192.168.0.1", 56324), ("192.168.0.11", 443)


def decode(data: bytes, chunk: int | None = None) -> tuple[ProxyHeader | None, bytes]:
    reader = ProxyHeaderReader()
    header = None
    step = chunk or len(data)
    for start in range(0, len(data), step):
        header = reader.receive_data(data[start : start + step])
        if header is not None:
            break
    return header, reader.rest


def test_v1_tcp4_matches_the_specification_example() -> None:
    """Section 2.1: "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\\r\\n"."""
    assert encode_v1(SRC, DST) == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"


def test_v1_tcp6_and_unknown() -> None:
    assert encode_v1(("::1", 1), ("2001:db8::2", 2)) == b"PROXY TCP6 ::1 2001:db8::2 1 2\r\n"
    assert encode_v1(None, DST) == b"PROXY UNKNOWN\r\n"
    assert encode_v1(("::1", 1), DST) == b"PROXY UNKNOWN\r\n"


def test_v2_tcp4_layout() -> None:
    """Section 2.2: signature, 0x21 (v2, PROXY), 0x11 (INET, STREAM), length 12, addresses, ports."""
    expected = (
        V2_SIGNATURE + bytes([0x21, 0x11, 0, 12, 192, 168, 0, 1, 192, 168, 0, 11]) + b"\xdc\x04\x01\xbb"
    )
    assert encode_v2(SRC, DST) == expected


def test_v2_local_carries_no_address() -> None:
    """Section 2.2: LOCAL (0x20) is for the proxy's own connections, such as health checks."""
    assert encode_v2(None, None, local=True) == V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert decode(encode_v2(SRC, DST, local=True)) == (ProxyHeader(2, None, None, local=True), b"")


@pytest.mark.parametrize("encode", [encode_v1, encode_v2])
@pytest.mark.parametrize("addresses", [(SRC, DST), (("2001:db8::1", 65535), ("::1", 0))])
def test_round_trip_fed_byte_by_byte_keeps_the_application_bytes(
    encode: Callable[[Address, Address], bytes], addresses: tuple[Address, Address]
) -> None:
    data = encode(*addresses) + b"GET / HTTP/1.1\r\n"
    header, rest = decode(data, chunk=1)
    assert header is not None and (header.source, header.destination) == addresses
    header, rest = decode(data)
    assert rest == b"GET / HTTP/1.1\r\n"


def test_v2_unknown_family_is_accepted_without_addresses() -> None:
    data = V2_SIGNATURE + b"\x21\x31\x00\x04abcd"
    assert decode(data) == (ProxyHeader(2, None, None), b"")


def test_v2_skips_tlvs_after_the_addresses() -> None:
    tlv = b"\x01\x00\x02h2"  # PP2_TYPE_ALPN
    header = encode_v2(SRC, DST)
    data = header[:14] + (12 + len(tlv)).to_bytes(2, "big") + header[16:] + tlv + b"app"
    assert decode(data) == (ProxyHeader(2, SRC, DST), b"app")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"GET / HTTP/1.1\r\n", "neither"),
        (b"PROXI TCP4", "starts with"),
        (b"PROXY TCP4 " + b"1" * 100, "longer than 107"),
        (b"PROXY TCP5 1.1.1.1 2.2.2.2 1 2\r\n", "expected"),
        (b"PROXY TCP4 1.1.1.1 ::1 1 2\r\n", "do not match"),
        (b"PROXY TCP4 1.1.1.1 2.2.2.2 1 70000\r\n", "out of range"),
        (b"PROXY TCP4 1.1.1.x 2.2.2.2 1 2\r\n", "does not appear"),
        (b"\r\n\r\n\x00\r\nQUIX\n", "signature"),
        (V2_SIGNATURE + b"\x11\x11\x00\x00", "version"),
        (V2_SIGNATURE + b"\x21\x11\xff\xff", "over the limit"),
        (V2_SIGNATURE + b"\x21\x11\x00\x02ab", "shorter"),
    ],
)
def test_malformed_headers_are_protocol_errors(data: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode(data)


def test_an_incomplete_header_asks_for_more() -> None:
    reader = ProxyHeaderReader()
    assert reader.receive_data(b"") is None
    assert reader.receive_data(b"PROXY TCP4 1.1") is None
    assert reader.receive_data(b".1.1 2.2.2.2 1 2\r") is None
    assert reader.receive_data(b"\n") == ProxyHeader(1, ("1.1.1.1", 1), ("2.2.2.2", 2))
    assert ProxyHeaderReader().receive_data(V2_SIGNATURE[:5]) is None
    assert ProxyHeaderReader().receive_data(encode_v2(SRC, DST)[:20]) is None

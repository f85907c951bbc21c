"""The PROXY protocol, versions 1 and 2 (HAProxy's "proxy-protocol.txt"): encoding and decoding.

Theory of operation: a layer 4 balancer connects to the backend itself, so the backend sees the
balancer's address, not the client's. With the PROXY protocol the balancer writes one header before
any of the client's bytes, naming the client's address and the address it connected to. Version 1 is
a line of text ("PROXY TCP4 src dst sport dport\\r\\n", at most 107 bytes); version 2 is binary: a
12-byte signature, version and command, family and transport, a length, the addresses, then optional
TLVs. The balancer only encodes; `ProxyHeaderReader` decodes, for tests and for backends that accept
the header. It is fed any chunks and says when the header is complete; the bytes after it belong to
the application and are handed back in `rest`.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from wirelab.errors import ProtocolError

__all__ = ["V1_MAX", "V2_SIGNATURE", "ProxyHeader", "ProxyHeaderReader", "encode_v1", "encode_v2"]

Address = tuple[str, int]

V1_MAX = 107  # section 2.1: the longest possible line, CRLF included
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_FIXED = struct.Struct("!12sBBH")
_ADDRESS_SIZES = {0x11: 4, 0x21: 16}  # family byte AF_INET or AF_INET6 over STREAM: bytes per address


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A decoded header; addresses are None for v1 UNKNOWN, v2 LOCAL, or a family we do not carry."""

    version: int
    source: Address | None
    destination: Address | None
    local: bool = False


def encode_v1(source: Address | None, destination: Address | None) -> bytes:
    """The v1 line; without both addresses (a UNIX socket, say) it says UNKNOWN, as section 2.1 allows."""
    if source is None or destination is None:
        return b"PROXY UNKNOWN\r\n"
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        return b"PROXY UNKNOWN\r\n"
    proto = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {proto} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")


def encode_v2(source: Address | None, destination: Address | None, *, local: bool = False) -> bytes:
    """The v2 header; LOCAL (the balancer's own connection, e.g. a health check) carries no address."""
    if local or source is None or destination is None:
        return _V2_FIXED.pack(V2_SIGNATURE, 0x20, 0x00, 0)
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        return _V2_FIXED.pack(V2_SIGNATURE, 0x21, 0x00, 0)
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    return _V2_FIXED.pack(V2_SIGNATURE, 0x21, family, len(body)) + body


class ProxyHeaderReader:
    """Incremental decoder of either version; `receive_data` returns the header once it is complete."""

    def __init__(self, *, max_v2_length: int = 4096) -> None:
        self._buffer = bytearray()
        self._max_v2_length = max_v2_length
        self.rest = b""

    def receive_data(self, data: bytes) -> ProxyHeader | None:
        self._buffer += data
        if self._buffer[:1] == b"P":
            return self._read_v1()
        if self._buffer[:1] == b"\r":
            return self._read_v2()
        if self._buffer:
            raise ProtocolError("PROXY header: neither a v1 line nor the v2 signature")
        return None

    def _read_v1(self) -> ProxyHeader | None:
        if not b"PROXY ".startswith(bytes(self._buffer[:6])):
            raise ProtocolError("PROXY header: a v1 line starts with 'PROXY '")
        end = self._buffer.find(b"\r\n")
        if end < 0:
            if len(self._buffer) >= V1_MAX:
                raise ProtocolError(f"PROXY v1 line longer than {V1_MAX} bytes")
            return None
        if end + 2 > V1_MAX:
            raise ProtocolError(f"PROXY v1 line longer than {V1_MAX} bytes")
        line = bytes(self._buffer[:end]).decode("ascii", "replace")
        self.rest = bytes(self._buffer[end + 2 :])
        return _parse_v1(line.split(" "))

    def _read_v2(self) -> ProxyHeader | None:
        if len(self._buffer) < _V2_FIXED.size:
            if not V2_SIGNATURE.startswith(bytes(self._buffer[:12])):
                raise ProtocolError("PROXY header: bad v2 signature")
            return None
        signature, version_command, family, length = _V2_FIXED.unpack_from(self._buffer)
        if signature != V2_SIGNATURE:
            raise ProtocolError("PROXY header: bad v2 signature")
        if version_command >> 4 != 2 or version_command & 0x0F not in (0, 1):
            raise ProtocolError(f"PROXY v2: bad version/command byte {version_command:#04x}")
        if length > self._max_v2_length:
            raise ProtocolError(f"PROXY v2: {length} bytes of addresses and TLVs is over the limit")
        end = _V2_FIXED.size + length
        if len(self._buffer) < end:
            return None
        body = bytes(self._buffer[_V2_FIXED.size : end])
        self.rest = bytes(self._buffer[end:])
        if version_command & 0x0F == 0:
            return ProxyHeader(2, None, None, local=True)
        return _parse_v2_addresses(family, body)


def _parse_v1(words: list[str]) -> ProxyHeader:
    if len(words) >= 2 and words[1] == "UNKNOWN":
        return ProxyHeader(1, None, None)
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProtocolError("PROXY v1: expected 'PROXY TCP4|TCP6 src dst sport dport'")
    try:
        src, dst = ipaddress.ip_address(words[2]), ipaddress.ip_address(words[3])
        ports = int(words[4]), int(words[5])
    except ValueError as exc:
        raise ProtocolError(f"PROXY v1: {exc}") from None
    if src.version != dst.version or f"TCP{src.version}" != words[1]:
        raise ProtocolError(f"PROXY v1: addresses do not match {words[1]}")
    if not all(0 <= port <= 65535 for port in ports):
        raise ProtocolError("PROXY v1: port out of range")
    return ProxyHeader(1, (str(src), ports[0]), (str(dst), ports[1]))


def _parse_v2_addresses(family: int, body: bytes) -> ProxyHeader:
    size = _ADDRESS_SIZES.get(family)
    if size is None:
        return ProxyHeader(2, None, None)  # section 2.2: unknown families are accepted, addresses ignored
    if len(body) < 2 * size + 4:
        raise ProtocolError("PROXY v2: address block shorter than its family needs")
    src = ipaddress.ip_address(body[:size])
    dst = ipaddress.ip_address(body[size : 2 * size])
    sport, dport = struct.unpack_from("!HH", body, 2 * size)
    return ProxyHeader(2, (str(src), sport), (str(dst), dport))

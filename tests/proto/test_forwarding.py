"""The forwarding rules every proxy of ours applies (wirelab.proto.forwarding)."""

from __future__ import annotations

from wirelab.proto.forwarding import end_to_end, forwarded_for, replayable, via
from wirelab.proto.http1 import Request


def _request(method: bytes, *headers: tuple[bytes, bytes]) -> Request:
    return Request(method, b"/", b"1.1", headers)


def test_hop_by_hop_fields_and_those_connection_names_stop_here() -> None:
    """RFC 9110 §7.6.1."""
    fields = [
        (b"host", b"a"),
        (b"connection", b"keep-alive, X-Secret"),
        (b"keep-alive", b"timeout=5"),
        (b"x-secret", b"1"),
        (b"transfer-encoding", b"chunked"),
        (b"te", b"trailers"),
        (b"upgrade", b"websocket"),
        (b"accept", b"*/*"),
    ]
    assert end_to_end(fields) == [(b"host", b"a"), (b"accept", b"*/*")]


def test_via_names_the_version_received_and_our_pseudonym() -> None:
    """RFC 9110 §7.6.3."""
    assert via(b"1.1") == (b"via", b"1.1 wirelab")
    assert via(b"2") == (b"via", b"2 wirelab")


def test_the_client_is_appended_to_what_earlier_proxies_said() -> None:
    """RFC 7239 §4 and X-Forwarded-For: earlier entries kept in order, ours last; X-Forwarded-Proto is
    ours to set, not to relay."""
    headers = [
        (b"host", b"example.com"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"forwarded", b"for=10.0.0.1;proto=https"),
        (b"x-forwarded-proto", b"https"),
        (b"connection", b"close"),
    ]
    fields, host = forwarded_for(headers, peer="192.0.2.7", scheme="http", version=b"1.1")
    assert host == b"example.com"
    assert fields == [
        (b"host", b"example.com"),
        (b"x-forwarded-for", b"10.0.0.1, 192.0.2.7"),
        (b"forwarded", b'for=10.0.0.1;proto=https, for=192.0.2.7;proto=http;host="example.com"'),
        (b"x-forwarded-proto", b"http"),
        (b"via", b"1.1 wirelab"),
    ]


def test_an_ipv6_client_is_quoted_in_brackets_and_a_missing_host_is_said() -> None:
    """RFC 7239 §6: an IPv6 node is a quoted, bracketed string."""
    fields, host = forwarded_for([], peer="2001:db8::1", scheme="https", version=b"1.0")
    assert host == b""
    assert (b"forwarded", b'for="[2001:db8::1]";proto=https') in fields
    assert (b"via", b"1.0 wirelab") in fields


def test_only_idempotent_or_keyed_bodyless_requests_are_replayable() -> None:
    """RFC 9110 §9.2.2."""
    assert replayable(_request(b"GET"), has_body=False)
    assert replayable(_request(b"OPTIONS"), has_body=False)
    assert not replayable(_request(b"GET"), has_body=True)
    assert not replayable(_request(b"POST"), has_body=False)
    assert replayable(_request(b"POST", (b"idempotency-key", b"k1")), has_body=False)
    assert not replayable(_request(b"POST", (b"idempotency-key", b"k1")), has_body=True)

"""What a proxy does to a message's fields as it forwards it, whatever HTTP version either side speaks.

The rules are few and the same for the forward proxy, the layer 7 balancer and the sidecar, so they
live here once, pure:

- RFC 9110 §7.6.1: hop-by-hop fields, and those a Connection field names, stop at the proxy.
- RFC 9110 §7.6.3: each proxy adds itself to Via, with the protocol version it received.
- RFC 7239 Forwarded, and the older X-Forwarded-For and X-Forwarded-Proto: the client's address and
  scheme, appended to what earlier proxies said (X-Forwarded-Proto is ours to set, never to relay).
- RFC 9113 §8.2.2: to an HTTP/2 peer, TE goes only as "trailers", and Host as :authority.
- RFC 9110 §9.2.2: a request may be sent again after a failure that left its outcome unknown only if
  it is idempotent (or carries an Idempotency-Key) and has no body to send again.
"""

from __future__ import annotations

from collections.abc import Iterable

from wirelab.proto.http1 import Request

__all__ = ["PSEUDONYM", "end_to_end", "for_http2", "forwarded_for", "replayable", "via"]

PSEUDONYM = b"wirelab"
"""How we name ourselves in Via (§7.6.3 allows a pseudonym in place of a host)."""

Fields = list[tuple[bytes, bytes]]

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


def end_to_end(headers: Iterable[tuple[bytes, bytes]]) -> Fields:
    """The fields meant for the far end: minus hop-by-hop ones and those Connection names (§7.6.1)."""
    fields = list(headers)
    named = {
        token.strip(b" \t").lower()
        for name, value in fields
        if name == b"connection"
        for token in value.split(b",")
    }
    return [(name, value) for name, value in fields if name not in _HOP_BY_HOP and name not in named]


def via(version: bytes) -> tuple[bytes, bytes]:
    """Our Via entry for a message received over HTTP/`version` (b"1.1", b"2")."""
    return b"via", version + b" " + PSEUDONYM


def forwarded_for(
    headers: Iterable[tuple[bytes, bytes]], *, peer: str, scheme: str, version: bytes
) -> tuple[Fields, bytes]:
    """The end-to-end fields with the client `peer` appended to X-Forwarded-For and Forwarded, our
    X-Forwarded-Proto and Via; and the Host the request named (b"" if none). One pass over the
    fields: a balancer runs this for every request."""
    fields, chain, forwards = [], [], []
    host = b""
    for name, value in end_to_end(headers):
        if name == b"x-forwarded-for":
            chain.append(value)
        elif name == b"forwarded":
            forwards.append(value)
        elif name != b"x-forwarded-proto":
            host = value if name == b"host" and not host else host
            fields.append((name, value))
    node = f'"[{peer}]"' if ":" in peer else peer
    forwarded = f"for={node};proto={scheme}".encode() + (b';host="%b"' % host if host else b"")
    fields += [
        (b"x-forwarded-for", b", ".join([*chain, peer.encode()])),
        (b"forwarded", b", ".join([*forwards, forwarded])),
        (b"x-forwarded-proto", scheme.encode()),
        via(version),
    ]
    return fields, host


def for_http2(fields: Fields, request: Request) -> Fields:
    """End-to-end `fields` as an HTTP/2 request carries them: Host leaves (the caller sends it as
    :authority) and TE, hop-by-hop otherwise, stays if it asks for trailers (gRPC needs it)."""
    sent = [field for field in fields if field[0] != b"host"]
    if b"trailers" in request.tokens(b"te"):
        sent.append((b"te", b"trailers"))
    return sent


def replayable(request: Request, *, has_body: bool) -> bool:
    """Whether a proxy may send this request again after a failure that left its outcome unknown."""
    return not has_body and (request.method in _IDEMPOTENT or bool(request.values(b"idempotency-key")))

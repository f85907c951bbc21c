"""Idempotency keys (the IETF httpapi Idempotency-Key draft, with Stripe's semantics), sans-I/O.

A client that may retry a POST sends `Idempotency-Key: K`. The first request with K claims it,
executes, and its response is stored with the key in the same transaction as what it wrote, so a
crash never leaves one without the other. A retry with the same K and the same payload gets the
stored response again (`Idempotent-Replayed: true`) and executes nothing; the same K with another
payload is a client bug (422); a retry arriving while the first is still running gets 409. Keys
expire after a while (24 h by default) and are swept.

This module holds the rules and the records; the store keeps the records, the HTTP middleware in
`wirelab.http` applies the rules.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from wirelab.errors import BadRequest, Conflict, Unprocessable
from wirelab.proto import strictjson

__all__ = [
    "HEADER",
    "MAX_KEY_LENGTH",
    "REPLAYED_HEADER",
    "Completion",
    "KeyRecord",
    "StoredResponse",
    "check_key",
    "decide",
    "fingerprint",
    "worth_keeping",
]

HEADER = "idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"
MAX_KEY_LENGTH = 255
KEPT_HEADERS = frozenset({"content-type", "location", "wirelab-job"})
"""The response headers a replay repeats; the rest (date, length) belong to each answer."""


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def to_json(self) -> str:
        return json.dumps(
            {
                "status": self.status,
                "headers": [list(h) for h in self.headers],
                "body": base64.b64encode(self.body).decode(),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> StoredResponse:
        data = json.loads(text)
        headers = tuple((str(k), str(v)) for k, v in data["headers"])
        return cls(int(data["status"]), headers, base64.b64decode(data["body"]))

    @classmethod
    def of(cls, status: int, headers: list[tuple[str, str]], body: bytes) -> StoredResponse:
        """A response as it will be replayed: only the headers worth repeating."""
        return cls(status, tuple((k.lower(), v) for k, v in headers if k.lower() in KEPT_HEADERS), body)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as the store holds it: claimed at `claimed_at`, done once it has a response."""

    key: str
    fingerprint: str
    claimed_at: float
    response: StoredResponse | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """Store `response` as the outcome of `key` (in the same transaction as the request's writes)."""

    key: str
    response: StoredResponse


def check_key(raw: str) -> str:
    if not 0 < len(raw) <= MAX_KEY_LENGTH or not raw.isascii() or not raw.isprintable():
        raise BadRequest(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters")
    return raw


def fingerprint(method: str, path: str, body: bytes) -> str:
    """What makes two requests "the same": method, path and payload. A JSON payload is compared by
    meaning, so a retry that re-serialises it (other key order, other spacing) still matches; a body
    that is not JSON to our strict parser is compared byte for byte (the handler will refuse it)."""
    try:
        payload = json.dumps(strictjson.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except BadRequest:
        payload = body
    return hashlib.sha256(b"%s %s\n%s" % (method.encode(), path.encode(), payload)).hexdigest()


def decide(record: KeyRecord | None, fingerprint: str) -> StoredResponse | None:
    """What to do with a request whose claim found `record` (None: the claim is ours, execute).

    Returns the response to replay; raises 422 for another payload under the same key, and 409
    while the first request with the key is still running.
    """
    if record is None:
        return None
    if record.fingerprint != fingerprint:
        raise Unprocessable("this Idempotency-Key was used with another request; use a new key")
    if record.response is None:
        raise Conflict(
            "a request with this Idempotency-Key is still being processed; retry in a moment",
            headers={"retry-after": "1"},
        )
    return record.response


def worth_keeping(status: int) -> bool:
    """Outcomes a retry must see again: successes and the client's own errors. A 409, 423 or 429
    may clear up, and a 5xx is ours: those release the key, so a retry executes afresh."""
    return status < 500 and status not in (409, 423, 429)

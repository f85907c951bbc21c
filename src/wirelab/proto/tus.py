"""tus 1.0.0 resumable uploads, sans-I/O: header parsing, the offset rules and an upload's state.

An upload is a file of known (or deferred) length filled in order: every PATCH must start exactly at
the server's offset, so a client that lost a connection asks (HEAD) and carries on from there. The
rules below decide what a request may do and what the answer says; the adapter in `wirelab.upload`
moves the bytes and keeps the state. Time is passed in as `now` (seconds since the epoch).

Extensions served: creation, creation-with-upload, creation-defer-length, checksum, termination,
expiration and concatenation (parts uploaded side by side, then joined by a `final` upload).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from email.utils import formatdate
from typing import Any

from wirelab.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    PayloadTooLarge,
    PreconditionFailed,
    ProblemError,
    UnsupportedMediaType,
)

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "EXTENSIONS",
    "OFFSET_OCTET_STREAM",
    "VERSION",
    "Checksum",
    "ChecksumMismatch",
    "Patch",
    "Upload",
    "check_version",
    "creation_body",
    "discovery_headers",
    "final_parts",
    "new_final",
    "new_upload",
    "parse_checksum",
    "parse_metadata",
    "plan_patch",
    "state_headers",
]

VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "checksum",
    "termination",
    "expiration",
    "concatenation",
)
CHECKSUM_ALGORITHMS = ("md5", "sha1", "sha256")
OFFSET_OCTET_STREAM = "application/offset+octet-stream"

_KEY = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_ID = re.compile(r"^[0-9a-f]{32}$")
_DIGEST_SIZES = {"md5": 16, "sha1": 20, "sha256": 32}


class ChecksumMismatch(ProblemError):
    """tus's own status: the chunk did not match its Upload-Checksum and was thrown away."""

    status = 460
    title = "Checksum Mismatch"


@dataclass(frozen=True, slots=True)
class Upload:
    id: str
    length: int | None
    """None while the length is deferred (creation-defer-length)."""
    offset: int
    expires_at: float
    metadata: str = ""
    """The Upload-Metadata header as the client sent it, echoed back on HEAD."""
    concat: str | None = None
    """"partial", "final" or None."""
    parts: tuple[str, ...] = ()
    """A final upload's partial uploads, in order."""
    image: str | None = None
    job: str | None = None

    @property
    def complete(self) -> bool:
        return self.length is not None and self.offset == self.length

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def info(self) -> dict[str, str | None]:
        return parse_metadata(self.metadata)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "parts": list(self.parts)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Upload:
        return cls(**{**data, "parts": tuple(data.get("parts", ()))})


@dataclass(frozen=True, slots=True)
class Checksum:
    algorithm: str
    digest: bytes

    def verify(self, actual: bytes) -> None:
        if not hmac.compare_digest(self.digest, actual):
            raise ChecksumMismatch(
                f"the chunk's {self.algorithm} is not the one in Upload-Checksum; it was discarded"
            )


@dataclass(frozen=True, slots=True)
class Patch:
    """What one PATCH may do: write at `upload.offset` at most `limit` bytes, then verify `checksum`."""

    upload: Upload
    limit: int
    checksum: Checksum | None


def check_version(headers: Mapping[str, str]) -> None:
    """Every request but OPTIONS names the protocol version; we speak only 1.0.0."""
    version = headers.get("tus-resumable")
    if version != VERSION:
        raise PreconditionFailed(
            f"this server speaks tus {VERSION}; the request said Tus-Resumable: {version or '(none)'}",
            headers={"tus-version": VERSION},
        )


def discovery_headers(max_size: int) -> dict[str, str]:
    return {
        "tus-version": VERSION,
        "tus-extension": ",".join(EXTENSIONS),
        "tus-max-size": str(max_size),
        "tus-checksum-algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


def state_headers(upload: Upload) -> dict[str, str]:
    """The headers of a HEAD: where the upload stands, and until when it is kept."""
    headers = {
        "upload-offset": str(upload.offset),
        "upload-expires": formatdate(upload.expires_at, usegmt=True),
        "cache-control": "no-store",
    }
    if upload.length is None:
        headers["upload-defer-length"] = "1"
    else:
        headers["upload-length"] = str(upload.length)
    if upload.metadata:
        headers["upload-metadata"] = upload.metadata
    if upload.concat == "partial":
        headers["upload-concat"] = "partial"
    elif upload.concat == "final":
        headers["upload-concat"] = "final;" + " ".join(f"/uploads/{p}" for p in upload.parts)
    return headers


def new_upload(
    upload_id: str, headers: Mapping[str, str], *, max_size: int, now: float, lifetime: float
) -> Upload:
    """A created upload (creation, creation-defer-length, a partial of concatenation)."""
    concat = headers.get("upload-concat")
    if concat is not None and concat != "partial":
        raise BadRequest(f"Upload-Concat must be partial or final;URLS, not {concat!r}")
    defer = headers.get("upload-defer-length")
    raw_length = headers.get("upload-length")
    if defer is not None and (defer != "1" or raw_length is not None):
        raise BadRequest("send either Upload-Length or Upload-Defer-Length: 1, not both")
    if defer is None and raw_length is None:
        raise BadRequest("Upload-Length is required (or Upload-Defer-Length: 1)")
    length = None if raw_length is None else _length(raw_length, max_size)
    metadata = headers.get("upload-metadata", "")
    parse_metadata(metadata)
    return Upload(upload_id, length, 0, now + lifetime, metadata, concat)


def new_final(
    upload_id: str,
    headers: Mapping[str, str],
    parts: list[Upload],
    *,
    max_size: int,
    now: float,
    lifetime: float,
) -> Upload:
    """A final upload joining complete partial uploads; it is complete from the start."""
    if "upload-length" in headers:
        raise BadRequest("a final upload must not carry Upload-Length: it is the sum of its parts")
    for part in parts:
        if part.concat != "partial":
            raise BadRequest(f"upload {part.id} is not a partial upload (Upload-Concat: partial)")
        if not part.complete:
            raise BadRequest(f"partial upload {part.id} is not finished ({part.offset} of {part.length})")
    length = sum(part.length or 0 for part in parts)
    if length > max_size:
        raise PayloadTooLarge(f"the parts add up to {length} bytes, over Tus-Max-Size {max_size}")
    metadata = headers.get("upload-metadata", "")
    parse_metadata(metadata)
    return Upload(upload_id, length, length, now + lifetime, metadata, "final", tuple(p.id for p in parts))


def final_parts(concat: str) -> list[str]:
    """The ids of the partial uploads that `Upload-Concat: final;URL URL...` names, in order."""
    kind, _, urls = concat.partition(";")
    if kind != "final" or not urls.split():
        raise BadRequest("Upload-Concat: final must list the partial uploads: final;/uploads/a /uploads/b")
    ids = [url.rstrip("/").rsplit("/", 1)[-1] for url in urls.split()]
    if not all(_ID.match(i) for i in ids):
        raise BadRequest(f"Upload-Concat names uploads that are not ours: {urls!r}")
    return ids


def plan_patch(upload: Upload, headers: Mapping[str, str], *, max_size: int, now: float) -> Patch:
    """Check a PATCH against the upload's state (RFC order: gone, forbidden, type, offset, length)."""
    if upload.expired(now):
        raise Gone(f"upload {upload.id} expired")
    if upload.concat == "final":
        raise Forbidden("a final upload is made of its parts and takes no PATCH")
    content_type = headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != OFFSET_OCTET_STREAM:
        raise UnsupportedMediaType(
            f"a PATCH carries Content-Type: {OFFSET_OCTET_STREAM}, not {content_type!r}"
        )
    raw_offset = headers.get("upload-offset")
    if raw_offset is None:
        raise BadRequest("Upload-Offset is required")
    offset = _number(raw_offset, "Upload-Offset")
    if offset != upload.offset:
        raise Conflict(
            f"Upload-Offset is {offset} but the upload is at {upload.offset}; HEAD it and resume there",
            headers={"upload-offset": str(upload.offset)},
        )
    upload = _with_length(upload, headers.get("upload-length"), max_size)
    checksum = parse_checksum(headers["upload-checksum"]) if "upload-checksum" in headers else None
    limit = (upload.length if upload.length is not None else max_size) - upload.offset
    return Patch(upload, limit, checksum)


def creation_body(headers: Mapping[str, str]) -> bool:
    """Whether a POST carries the first bytes (creation-with-upload)."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
    return content_type == OFFSET_OCTET_STREAM and has_body


def parse_metadata(raw: str) -> dict[str, str | None]:
    """`key base64,key2` → {key: value, key2: None}; a value that is not UTF-8 reads with U+FFFD."""
    metadata: dict[str, str | None] = {}
    for pair in filter(None, (p.strip() for p in raw.split(","))):
        key, _, value = pair.partition(" ")
        if not _KEY.match(key) or key in metadata or " " in value.strip():
            raise BadRequest(f"Upload-Metadata is `key base64value` pairs with distinct keys, not {pair!r}")
        decoded = _base64(value.strip(), f"Upload-Metadata {key}") if value else None
        metadata[key] = None if decoded is None else decoded.decode("utf-8", "replace")
    return metadata


def parse_checksum(raw: str) -> Checksum:
    algorithm, _, encoded = raw.strip().partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest(
            f"checksum {algorithm!r} is not supported; use one of {', '.join(CHECKSUM_ALGORITHMS)}"
        )
    digest = _base64(encoded.strip(), "Upload-Checksum")
    if len(digest) != _DIGEST_SIZES[algorithm]:
        raise BadRequest(f"a {algorithm} digest is {_DIGEST_SIZES[algorithm]} bytes, not {len(digest)}")
    return Checksum(algorithm, digest)


def _with_length(upload: Upload, raw: str | None, max_size: int) -> Upload:
    """creation-defer-length: the first PATCH that knows the length says it, once."""
    if raw is None:
        return upload
    length = _length(raw, max_size)
    if upload.length is not None:
        if length != upload.length:
            raise BadRequest(f"the upload's length is {upload.length}; it cannot change to {length}")
        return upload
    if length < upload.offset:
        raise BadRequest(f"Upload-Length {length} is below the bytes already received ({upload.offset})")
    return replace(upload, length=length)


def _length(raw: str, max_size: int) -> int:
    length = _number(raw, "Upload-Length")
    if length > max_size:
        raise PayloadTooLarge(f"Upload-Length {length} is over Tus-Max-Size {max_size}")
    return length


def _number(raw: str, name: str) -> int:
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise BadRequest(f"{name} must be a whole number of bytes, not {raw!r}")
    return int(raw)


def _base64(raw: str, name: str) -> bytes:
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{name} is not valid base64: {raw!r}") from None

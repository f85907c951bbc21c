"""tus 1.0.0 from the client's side: one method per request, each answer checked against the protocol.

This is the wire and nothing else: which bytes to send, when to resume and how to split a file is
`wirelab.clients.upload`'s business. A refusal raises `ServiceError` with the server's problem
document, except the two a resuming client handles itself: 409 (another offset: `OffsetMismatch`,
carrying the server's `Upload-Offset` when it sends one) and 423 (another request still holds the
upload, typically our own PATCH that died a moment ago and is still being written down). An answer
that breaks tus (no `Location`, no `Upload-Offset`, no `Tus-Resumable`) is a `ProtocolError`: the
client does not guess.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from wirelab.clients.jobs import ServiceError, checked, problem_of, raise_for_problem
from wirelab.errors import ProtocolError
from wirelab.proto.tus import OFFSET_OCTET_STREAM, VERSION

__all__ = ["OffsetMismatch", "TusClient", "TusState", "encode_metadata"]


class OffsetMismatch(ServiceError):
    """409: the upload is not at the offset we sent; `offset` is where it is, if the server said."""

    def __init__(self, status: int, problem: dict[str, Any], offset: int | None) -> None:
        super().__init__(status, problem)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class TusState:
    """What a HEAD says of an upload."""

    offset: int
    length: int | None


class TusClient:
    """Requests to one tus endpoint (`endpoint` is the creation URL, e.g. http://host/uploads/)."""

    def __init__(self, http: httpx.AsyncClient, endpoint: str) -> None:
        self._http = http
        self.endpoint = endpoint

    async def create(self, length: int, *, metadata: str = "", partial: bool = False) -> str:
        """POST: a new upload of `length` bytes; its absolute URL."""
        headers = {"Upload-Length": str(length)}
        if metadata:
            headers["Upload-Metadata"] = metadata
        if partial:
            headers["Upload-Concat"] = "partial"
        return self._location(await self._send("POST", self.endpoint, headers))

    async def concat(self, parts: Sequence[str], *, metadata: str = "") -> str:
        """POST `Upload-Concat: final`: one upload made of complete partial uploads, in order."""
        headers = {"Upload-Concat": "final;" + " ".join(parts)}
        if metadata:
            headers["Upload-Metadata"] = metadata
        return self._location(await self._send("POST", self.endpoint, headers))

    async def head(self, url: str) -> TusState | None:
        """HEAD: where the upload stands; None when the server no longer has it (404, 410)."""
        response = await self._http.head(url, headers=_tus({}))
        if response.status_code in (404, 410):
            return None
        _check(response)
        length = response.headers.get("upload-length")
        return TusState(_offset(response), None if length is None else _number(length, "Upload-Length"))

    async def patch(
        self, url: str, offset: int, body: AsyncIterator[bytes], size: int, *, checksum: str | None = None
    ) -> int:
        """PATCH `size` bytes at `offset`; the server's new offset."""
        headers = {
            "Content-Type": OFFSET_OCTET_STREAM,
            "Content-Length": str(size),
            "Upload-Offset": str(offset),
        }
        if checksum is not None:
            headers["Upload-Checksum"] = checksum
        response = await self._send("PATCH", url, headers, body)
        new = _offset(response)
        if not offset <= new <= offset + size:
            raise ProtocolError(f"PATCH of {size} bytes at {offset} answered Upload-Offset: {new}")
        return new

    async def info(self, url: str) -> dict[str, Any]:
        """GET (Wirelab's own, not tus): the upload as JSON, with the image and the job it became."""
        return checked(await self._http.get(url, headers=_tus({})))

    async def _send(
        self, method: str, url: str, headers: dict[str, str], body: AsyncIterator[bytes] | None = None
    ) -> httpx.Response:
        response = await self._http.request(method, url, headers=_tus(headers), content=body)
        if response.status_code == 409:
            raise OffsetMismatch(409, problem_of(response), _maybe_offset(response))
        _check(response)
        return response

    def _location(self, response: httpx.Response) -> str:
        location = response.headers.get("location")
        if response.status_code != 201 or not location:
            raise ProtocolError(f"creation answered {response.status_code} without a Location")
        return str(response.url.join(location))


def encode_metadata(metadata: Mapping[str, str | None]) -> str:
    """`Upload-Metadata`: `key base64(value)` pairs; a None value is sent as the bare key."""
    pairs = []
    for key, value in metadata.items():
        pairs.append(key if value is None else f"{key} {base64.b64encode(value.encode()).decode()}")
    return ",".join(pairs)


def _tus(headers: dict[str, str]) -> dict[str, str]:
    return {"Tus-Resumable": VERSION, **headers}


def _check(response: httpx.Response) -> None:
    raise_for_problem(response)
    if response.headers.get("tus-resumable") != VERSION:
        raise ProtocolError(
            f"{response.request.method} {response.url} answered without Tus-Resumable: {VERSION}"
        )


def _offset(response: httpx.Response) -> int:
    offset = _maybe_offset(response)
    if offset is None:
        raise ProtocolError(f"{response.request.method} {response.url} answered without Upload-Offset")
    return offset


def _maybe_offset(response: httpx.Response) -> int | None:
    raw = response.headers.get("upload-offset")
    return None if raw is None else _number(raw, "Upload-Offset")


def _number(raw: str, name: str) -> int:
    if not raw.isascii() or not raw.isdigit():
        raise ProtocolError(f"{name} is not a number of bytes: {raw!r}")
    return int(raw)

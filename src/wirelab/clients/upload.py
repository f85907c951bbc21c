"""Upload a file to Wirelab by tus (chunked, in parallel parts, resumable across runs) or in one request.

Theory of operation (tus): the file is cut into `parallel` contiguous parts. One part is a plain
upload; several are `Upload-Concat: partial` uploads filled side by side, then joined by one `final`
POST. Each part is filled by PATCHes of `chunk` bytes streamed from the file. Every upload URL is
written to the resume file (`wirelab.clients.resume`) as soon as the server creates it, before a
byte is sent, so a rerun of the same upload finds it and asks the server, with one HEAD per URL,
where it stands (the server keeps what arrived, even from a PATCH cut off mid-body); then it sends
only the rest. 404 or 410 means the server no longer has it: that part starts over.

A resumed PATCH can race the dying one it replaces, which the server may still be writing down. 423
says so: wait a moment and send it again. 409 says the offset moved meanwhile: carry on from the
offset the answer names. Neither costs another HEAD.

Whatever the route, the proof is the same: the sha256 of the stored image, as the server reports it,
must be the file's, which is computed in a worker thread while the bytes go out.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import mimetypes
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from wirelab.clients.files import file_sha256, range_digest, read_range
from wirelab.clients.jobs import ServiceError, post_image
from wirelab.clients.resume import Fingerprint, ResumeFile, Saved
from wirelab.clients.tus import OffsetMismatch, TusClient, encode_metadata
from wirelab.errors import ConfigError, ProtocolError, WirelabError
from wirelab.proto.tus import CHECKSUM_ALGORITHMS

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "DEFAULT_CHUNK",
    "UploadError",
    "UploadResult",
    "UploadStatistics",
    "Uploader",
    "VerificationError",
    "split",
]

T = TypeVar("T")
OnProgress = Callable[[int, int], None]
"""Called with (bytes sent or confirmed so far, total bytes)."""

DEFAULT_CHUNK = 4 << 20
LOCKED_WAITS_S = (0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0)
"""Pauses before sending a PATCH again that was answered 423; then the 423 is raised."""
FINAL_REFUSALS = frozenset({400, 403, 404, 410, 413, 415, 422})
"""Refusals a rerun would meet again (460, a damaged chunk, is not one): the upload is forgotten."""


class UploadError(WirelabError):
    """An upload that could not be done or proved (the server's own refusals are ServiceError)."""


class VerificationError(UploadError):
    """The server stored other bytes than the file's: the sha256 differ."""


@dataclass(frozen=True, slots=True)
class UploadResult:
    image: dict[str, Any]
    """The stored image: {"id", "sha256", "bytes", "media_type", "created_at"}."""
    job: str | None
    url: str | None
    """The tus upload (the final one of a parallel upload); None for a single request."""
    resumed: bool
    """Whether bytes an earlier run sent were found on the server and not sent again."""


@dataclass
class UploadStatistics:
    """What the uploads of one Uploader cost on the wire, summed over runs (resumes included)."""

    requests: Counter[str] = field(default_factory=Counter)
    """HTTP requests by method."""
    refused: int = 0
    """PATCHes answered 409 or 423, each sent again (see the module's docstring)."""
    bytes_sent: int = 0
    """Body bytes handed to the connection, those of a cut-off request included."""
    resumed_urls: int = 0
    """Upload URLs that a HEAD found alive and carried on with."""

    @property
    def total(self) -> int:
        return sum(self.requests.values())


class Uploader:
    """Uploads files to the Wirelab server at `base_url`; use `async with`, or `aclose()`."""

    def __init__(
        self,
        base_url: str,
        *,
        chunk: int = DEFAULT_CHUNK,
        parallel: int = 1,
        checksum: str | None = None,
        targets: Sequence[str] | None = None,
        state_path: Path | None = None,
        on_progress: OnProgress | None = None,
        timeout: float = 60.0,
    ) -> None:
        if chunk < 1 or parallel < 1:
            raise ConfigError(f"chunk and parallel must be at least 1, not {chunk} and {parallel}")
        if checksum is not None and checksum not in CHECKSUM_ALGORITHMS:
            raise ConfigError(f"checksum must be one of {', '.join(CHECKSUM_ALGORITHMS)}, not {checksum!r}")
        self.base_url = base_url.rstrip("/")
        self.chunk, self.parallel, self.checksum = chunk, parallel, checksum
        self.targets = None if targets is None else tuple(targets)
        self.statistics = UploadStatistics()
        self.resumable = False
        """True while the resume file holds an unfinished upload of ours: a rerun would resume it."""
        self._resume = ResumeFile(state_path)
        self._on_progress = on_progress or (lambda done, total: None)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, timeout=timeout, event_hooks={"request": [self._count]}
        )
        self._tus = TusClient(self._http, f"{self.base_url}/uploads/")

    async def upload(self, path: Path) -> UploadResult:
        """Send `path` by tus, resuming what an earlier run of the same upload left on the server."""
        fingerprint = await asyncio.to_thread(Fingerprint.of, self.base_url, path, self.parallel)
        if fingerprint.size == 0:
            raise UploadError(f"{path} is empty: there is no image to upload")
        ranges = split(fingerprint.size, fingerprint.parallel)
        try:
            return await self._proved(path, lambda: self._send(path, fingerprint, ranges))
        except ServiceError as exc:
            if exc.status in FINAL_REFUSALS:
                await asyncio.to_thread(self._resume.forget, fingerprint)
                self.resumable = False
            raise

    async def upload_single(self, path: Path) -> UploadResult:
        """Send `path` in one request (POST /images): nothing to resume, the peer of a tus upload."""
        size = (await asyncio.to_thread(path.stat)).st_size
        sent = _Sent(size, 1, self._on_progress)

        async def send() -> UploadResult:
            on_bytes = sent.adder(0, self.statistics)
            stored = await post_image(self._http, path, targets=self.targets, on_bytes=on_bytes)
            job = stored.pop("job", None)
            return UploadResult(stored, job, None, resumed=False)

        return await self._proved(path, send)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Uploader:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- tus --------------------------------------------------------------------------------------

    async def _send(
        self, path: Path, fingerprint: Fingerprint, ranges: list[tuple[int, int]]
    ) -> UploadResult:
        """Every byte on the server, then what it became (GET /uploads/ID)."""
        saved = await asyncio.to_thread(self._resume.get, fingerprint) or Saved((None,) * len(ranges))
        self.resumable = any(saved.parts) or saved.final is not None
        alive_before = self.statistics.resumed_urls
        sent = _Sent(fingerprint.size, len(ranges), self._on_progress)
        url = saved.final if saved.final and await self._alive(saved.final) is not None else None
        if url is None:
            urls = await _all(
                [
                    self._send_part(path, fingerprint, i, r, saved.parts[i], sent)
                    for i, r in enumerate(ranges)
                ]
            )
            url = urls[0] if len(urls) == 1 else await self._join(fingerprint, path, urls)
        sent.set_all_done()
        info = await self._tus.info(url)
        if not info.get("complete") or info.get("image") is None:
            raise ProtocolError(f"every byte of {url} was sent, yet the server reports no image: {info}")
        await asyncio.to_thread(self._resume.forget, fingerprint)
        self.resumable = False
        return UploadResult(
            info["image"], info.get("job"), url, self.statistics.resumed_urls > alive_before
        )

    async def _send_part(
        self,
        path: Path,
        fingerprint: Fingerprint,
        index: int,
        span: tuple[int, int],
        saved_url: str | None,
        sent: _Sent,
    ) -> str:
        start, end = span
        offset = None if saved_url is None else await self._alive(saved_url, length=end - start)
        url = saved_url
        if url is None or offset is None:
            partial = fingerprint.parallel > 1
            metadata = "" if partial else self._metadata(path)
            url = await self._tus.create(end - start, metadata=metadata, partial=partial)
            await asyncio.to_thread(self._resume.save_part, fingerprint, index, url)
            self.resumable, offset = True, 0
        sent.set(index, offset)
        await self._fill(path, url, span, offset, index, sent)
        return url

    async def _alive(self, url: str, *, length: int | None = None) -> int | None:
        """One HEAD: the upload's offset, or None if it is gone (or is not the upload we expect)."""
        state = await self._tus.head(url)
        if state is None or (length is not None and state.length != length):
            return None
        self.statistics.resumed_urls += 1
        return state.offset

    async def _fill(
        self,
        path: Path,
        url: str,
        span: tuple[int, int],
        offset: int,
        part: int,
        sent: _Sent,
    ) -> None:
        """PATCH chunk after chunk from `offset` to the end of the part."""
        start, end = span
        on_bytes = sent.adder(part, self.statistics)
        waits = iter(LOCKED_WAITS_S)
        while offset < end - start:
            size = min(self.chunk, end - start - offset)
            try:
                checksum = await self._checksum(path, start + offset, start + offset + size)
                body = read_range(path, start + offset, start + offset + size, on_bytes=on_bytes)
                offset = await self._tus.patch(url, offset, body, size, checksum=checksum)
            except OffsetMismatch as exc:
                self.statistics.refused += 1
                offset = exc.offset if exc.offset is not None else await self._offset_of(url)
            except ServiceError as exc:
                wait = next(waits, None) if exc.status == 423 else None
                if wait is None:
                    raise
                self.statistics.refused += 1
                await asyncio.sleep(wait)
            sent.set(part, offset)

    async def _offset_of(self, url: str) -> int:
        """A 409 that did not say the offset (tus does not require it): ask with a HEAD."""
        state = await self._tus.head(url)
        if state is None:
            raise UploadError(f"the server dropped {url} in the middle of the upload")
        return state.offset

    async def _checksum(self, path: Path, start: int, end: int) -> str | None:
        """`Upload-Checksum` of bytes [start, end), when asked for."""
        if self.checksum is None:
            return None
        digest = await range_digest(path, start, end, self.checksum)
        return f"{self.checksum} {base64.b64encode(digest).decode()}"

    async def _join(self, fingerprint: Fingerprint, path: Path, urls: list[str]) -> str:
        url = await self._tus.concat(urls, metadata=self._metadata(path))
        await asyncio.to_thread(self._resume.save_final, fingerprint, url)
        return url

    def _metadata(self, path: Path) -> str:
        """The upload's `Upload-Metadata`; `targets` empty is sent as the bare key (store only)."""
        metadata: dict[str, str | None] = {"filename": path.name}
        filetype = mimetypes.guess_type(path.name)[0]
        if filetype:
            metadata["filetype"] = filetype
        if self.targets is not None:
            metadata["targets"] = ",".join(self.targets) or None
        return encode_metadata(metadata)

    # -- both ---------------------------------------------------------------------------------------

    async def _proved(self, path: Path, send: Callable[[], Awaitable[UploadResult]]) -> UploadResult:
        """Run `send` while the file's sha256 is computed beside it; the stored image must match it."""
        local = asyncio.create_task(file_sha256(path))
        try:
            result = await send()
            sha256 = await local
        finally:
            local.cancel()
            await asyncio.wait([local])
        stored = result.image.get("sha256")
        if stored != sha256:
            raise VerificationError(
                f"the server's image {result.image.get('id')} has sha256 {stored}, but {path} has "
                f"{sha256}: the file changed during the upload, or bytes were damaged on the way"
            )
        return result

    async def _count(self, request: httpx.Request) -> None:
        self.statistics.requests[request.method] += 1


def split(size: int, parts: int) -> list[tuple[int, int]]:
    """`parts` contiguous [start, end) ranges covering `size` bytes, as even as can be, none empty."""
    parts = max(1, min(parts, size))
    bounds = [size * i // parts for i in range(parts + 1)]
    return list(itertools.pairwise(bounds))


class _Sent:
    """Bytes done per part (confirmed by the server, or handed to the connection since), reported
    as one running total."""

    def __init__(self, total: int, parts: int, report: OnProgress) -> None:
        self.total = total
        self._done = [0] * parts
        self._report = report

    def set(self, part: int, done: int) -> None:
        self._done[part] = done
        self._report(sum(self._done), self.total)

    def set_all_done(self) -> None:
        """A final upload found complete by its HEAD: nothing was sent, everything is there."""
        self._report(self.total, self.total)

    def adder(self, part: int, statistics: UploadStatistics) -> Callable[[int], None]:
        """`on_bytes` for one part's request bodies: counts the bytes sent, and shows them."""

        def add(count: int) -> None:
            statistics.bytes_sent += count
            self.set(part, self._done[part] + count)

        return add


async def _all(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """Run side by side; the first failure cancels the others (and is raised as itself, not grouped)."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)

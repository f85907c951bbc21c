"""`/uploads/`: the tus 1.0.0 endpoint, the asyncio adapter that drives `proto.tus` over ASGI.

One PATCH holds its upload's lock (a 423 for anyone else meanwhile), reads the state under it,
streams the body to disk and only then moves the offset, so the state never claims a byte that is
not on disk. A client that hangs up mid-PATCH keeps what arrived (unless it sent a checksum, which a
part of a chunk cannot match); that is what makes a resume cost one HEAD and no re-sent bytes.

The sha256 of a whole upload is computed while its bytes arrive, one running hash per upload kept
beside the offset it has reached; after a restart (or a discarded chunk) it is rebuilt from disk once.
When the last byte lands the file is renamed into the image store and `on_image` starts its job.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import IO, Any

from wirelab.errors import Gone, Locked, MethodNotAllowed, NotFound, ProblemError
from wirelab.http import Request, send_json
from wirelab.http.asgi import ClientGone
from wirelab.proto.imagetype import SNIFF_BYTES
from wirelab.proto.pipeline import parse_targets
from wirelab.proto.tus import (
    VERSION,
    Upload,
    check_version,
    creation_body,
    discovery_headers,
    final_parts,
    new_final,
    new_upload,
    plan_patch,
    state_headers,
)
from wirelab.upload.images import ImageHook, ImageStore, media_type_of
from wirelab.upload.spool import spool
from wirelab.upload.storage import UploadStorage

__all__ = ["TusEndpoint"]

log = logging.getLogger("wirelab.upload")

Handler = Callable[..., Awaitable[None]]
SETTLE_S = 2.0
"""How long a HEAD waits for a PATCH of the same upload that is still writing (then it answers)."""
_HASH_BLOCK = 1 << 20


_SWEPT_REMEMBERED = 10_000


def _expired(upload_id: str) -> Gone:
    return Gone(f"upload {upload_id} expired; start a new one")


class TusEndpoint:
    def __init__(
        self,
        storage: UploadStorage,
        images: ImageStore,
        *,
        max_size: int,
        lifetime_s: float,
        on_image: ImageHook,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._images = images
        self._max_size = max_size
        self._lifetime = lifetime_s
        self._swept: dict[str, None] = {}
        """Uploads the sweeper removed as expired, oldest first: their next request still gets its 410."""
        self._on_image = on_image
        self._clock = clock
        self._hashes: dict[str, tuple[int, Any]] = {}

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) for the router; `/uploads` and `/uploads/` are the same place."""
        routes: list[tuple[str, str, Handler]] = []
        for base in ("/uploads", "/uploads/"):
            routes += [("OPTIONS", base, self.options), ("POST", base, self.create)]
        one = "/uploads/{upload_id}"
        routes += [
            ("OPTIONS", one, self.options),
            ("HEAD", one, self.head),
            ("GET", one, self.status),
            ("PATCH", one, self.patch),
            ("DELETE", one, self.delete),
            ("POST", one, self.override),
        ]
        return [(method, path, _tus_errors(handler)) for method, path, handler in routes]

    async def options(self, request: Request, upload_id: str | None = None) -> None:
        await _respond(request, 204, discovery_headers(self._max_size))

    async def create(self, request: Request) -> None:
        check_version(request.headers)
        upload_id = secrets.token_hex(16)
        concat = request.headers.get("upload-concat", "")
        if concat.startswith("final"):
            upload = await self._join(upload_id, request.headers, final_parts(concat))
        else:
            upload = new_upload(
                upload_id,
                request.headers,
                max_size=self._max_size,
                now=self._clock(),
                lifetime=self._lifetime,
            )
            _targets(upload)
            await asyncio.to_thread(self._storage.create, upload)
            log.info("upload %s created (%s bytes)", upload_id, upload.length or "deferred")
        headers = {"location": _url(request, upload_id), **_expiry(upload)}
        if upload.concat != "final" and creation_body(request.headers):
            upload = await self._receive(request, upload_id, {**request.headers, "upload-offset": "0"})
            headers["upload-offset"] = str(upload.offset)
        await _respond(request, 201, {**headers, **_result(upload)})

    async def head(self, request: Request, upload_id: str) -> None:
        check_version(request.headers)
        await self._settled(upload_id)
        upload = await self._live(upload_id)
        await _respond(request, 200, {**state_headers(upload), **_result(upload)})

    async def status(self, request: Request, upload_id: str) -> None:
        """Not part of tus: the upload as JSON, with the image and the job it became."""
        upload = await self._live(upload_id)
        image = await asyncio.to_thread(self._images.info, upload.image) if upload.image else None
        body = {
            "id": upload.id,
            "offset": upload.offset,
            "length": upload.length,
            "complete": upload.complete,
            "concat": upload.concat,
            "metadata": upload.info(),
            "expires": datetime.fromtimestamp(upload.expires_at, UTC).isoformat(),
            "image": image.to_json() if image else None,
            "job": upload.job,
        }
        await send_json(request.send, 200, body, headers=[("tus-resumable", VERSION)])

    async def patch(self, request: Request, upload_id: str) -> None:
        check_version(request.headers)
        upload = await self._receive(request, upload_id, request.headers)
        headers = {"upload-offset": str(upload.offset), **_expiry(upload), **_result(upload)}
        await _respond(request, 204, headers)

    async def delete(self, request: Request, upload_id: str) -> None:
        check_version(request.headers)
        await self._live(upload_id)
        await self._remove(upload_id)
        log.info("upload %s terminated", upload_id)
        await _respond(request, 204, {})

    async def override(self, request: Request, upload_id: str) -> None:
        """X-HTTP-Method-Override, for clients behind proxies that only pass GET and POST."""
        method = request.headers.get("x-http-method-override", "").upper()
        handlers = {"PATCH": self.patch, "DELETE": self.delete, "HEAD": self.head}
        if method not in handlers:
            allowed = "DELETE, GET, HEAD, OPTIONS, PATCH"
            raise MethodNotAllowed(
                f"POST here needs X-HTTP-Method-Override: PATCH, DELETE or HEAD; or use {allowed}",
                headers={"allow": allowed},
            )
        await handlers[method](request, upload_id)

    async def sweep(self) -> int:
        """Remove expired uploads (not those being written right now); how many went."""
        removed = 0
        for upload_id in await asyncio.to_thread(self._storage.ids):
            try:
                await self._live(upload_id)
            except Gone:
                removed += 1
                self._swept[upload_id] = None
                if len(self._swept) > _SWEPT_REMEMBERED:
                    del self._swept[next(iter(self._swept))]
            except (NotFound, Locked):
                pass
        return removed

    async def _settled(self, upload_id: str) -> None:
        """Wait a little for a PATCH of this upload still being written, typically one whose client
        has just vanished while its last bytes land, so that a resuming HEAD counts them all."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            try:
                file = await asyncio.to_thread(self._storage.open_locked, upload_id)
            except Locked:
                if time.monotonic() >= deadline:
                    return
                await asyncio.sleep(0.01)
            except NotFound:
                return
            else:
                file.close()
                return

    async def _live(self, upload_id: str) -> Upload:
        """The upload's state; an expired one is removed on sight and answers 410 this once (the next
        request after the sweeper removed it, if that came first)."""
        try:
            upload = await asyncio.to_thread(self._storage.load, upload_id)
        except NotFound:
            if upload_id not in self._swept:
                raise
            del self._swept[upload_id]
            raise _expired(upload_id) from None
        if upload.expired(self._clock()):
            await self._remove(upload_id)
            log.info("upload %s expired and was removed", upload_id)
            raise _expired(upload_id)
        return upload

    async def _remove(self, upload_id: str) -> None:
        """Delete an upload unless a PATCH holds it (423); a finished one has only its state left."""
        try:
            file = await asyncio.to_thread(self._storage.open_locked, upload_id)
        except NotFound:
            await asyncio.to_thread(self._storage.delete, upload_id)
        else:
            try:
                await asyncio.to_thread(self._storage.delete, upload_id)
            finally:
                await asyncio.to_thread(file.close)
        self._hashes.pop(upload_id, None)

    async def _receive(self, request: Request, upload_id: str, headers: dict[str, str]) -> Upload:
        """Write one PATCH body under the upload's lock: the new state. A client that left mid-body
        gets ClientGone, once what it sent is kept."""
        try:
            file, state = await asyncio.to_thread(self._open, upload_id)
        except NotFound:
            # A finished upload's bytes are an image now: it answers from its state (409, or 204
            # for a PATCH at its end); with no state either, it is a 404.
            state = await asyncio.to_thread(self._storage.load, upload_id)
            return plan_patch(state, headers, max_size=self._max_size, now=self._clock()).upload
        try:
            plan = plan_patch(state, headers, max_size=self._max_size, now=self._clock())
            upload = plan.upload
            whole = await self._running_hash(upload, file)
            start = whole.copy() if whole is not None else None
            chunk = hashlib.new(plan.checksum.algorithm) if plan.checksum else None
            gone = False
            try:
                await spool(request.stream(limit=plan.limit), file, [d for d in (whole, chunk) if d])
            except ClientGone:
                gone = True
            except BaseException:
                self._hashes.pop(upload_id, None)
                raise
            if plan.checksum is not None and chunk is not None:
                # A checksum covers the whole chunk: a part of one, or a wrong one, is thrown away.
                if start is not None:
                    self._hashes[upload_id] = (upload.offset, start)
                if gone:
                    raise ClientGone()
                plan.checksum.verify(chunk.digest())
            before = upload.offset
            upload = await asyncio.to_thread(self._settle, file, upload)
            await self._check_image(upload, before)
            if whole is not None:
                self._hashes[upload_id] = (upload.offset, whole)
                if upload.complete:
                    upload = await self._finish(upload, whole.hexdigest())
            if gone:
                raise ClientGone()
            return upload
        finally:
            file.close()  # cheap (no flush is left to do) and it releases the lock at once

    def _open(self, upload_id: str) -> tuple[IO[bytes], Upload]:
        """The upload's file, locked and positioned at its offset (past it: a discarded chunk,
        cut off), and its state read under the lock; one trip to a worker thread."""
        file = self._storage.open_locked(upload_id)
        try:
            state = self._storage.load(upload_id)
            file.truncate(state.offset)
            file.seek(state.offset)
        except BaseException:
            file.close()
            raise
        return file, state

    def _settle(self, file: IO[bytes], upload: Upload) -> Upload:
        """The bytes are down: move the offset to their end, and keep the upload a while longer."""
        file.flush()
        upload = replace(upload, offset=file.tell(), expires_at=self._clock() + self._lifetime)
        self._storage.save(upload)
        return upload

    async def _running_hash(self, upload: Upload, file: IO[bytes]) -> Any:
        """The sha256 of the upload's bytes so far, or None for a part (hashed when joined)."""
        if upload.concat == "partial":
            return None
        offset, digest = self._hashes.pop(upload.id, (-1, None))
        if offset != upload.offset or digest is None:
            digest = await asyncio.to_thread(_hash_prefix, file, upload.offset)
            await asyncio.to_thread(file.seek, upload.offset)
        return digest

    async def _check_image(self, upload: Upload, before: int) -> None:
        """Refuse bytes that are no image as soon as there are enough of them to tell (parts are
        checked once joined, and a complete upload when it is adopted)."""
        if upload.concat is None and before < SNIFF_BYTES <= upload.offset:
            head = await asyncio.to_thread(self._storage.read, upload.id, SNIFF_BYTES)
            try:
                media_type_of(head)
            except ProblemError:
                await asyncio.to_thread(self._storage.delete, upload.id)
                self._hashes.pop(upload.id, None)
                raise

    async def _join(self, upload_id: str, headers: dict[str, str], part_ids: list[str]) -> Upload:
        parts = [await self._live(part_id) for part_id in part_ids]
        upload = new_final(
            upload_id, headers, parts, max_size=self._max_size, now=self._clock(), lifetime=self._lifetime
        )
        _targets(upload)
        digest = hashlib.sha256()
        await asyncio.to_thread(self._storage.join, upload_id, part_ids, digest.update)
        await asyncio.to_thread(self._storage.save, upload)
        for part_id in part_ids:
            await self._remove(part_id)
        log.info("upload %s joined from %d parts (%d bytes)", upload_id, len(parts), upload.offset)
        return await self._finish(upload, digest.hexdigest())

    async def _finish(self, upload: Upload, sha256: str) -> Upload:
        """The complete upload becomes a stored image (or, being none, goes), and its job starts."""
        path = self._storage.data_path(upload.id)
        self._hashes.pop(upload.id, None)
        try:
            image = await asyncio.to_thread(self._images.adopt, path, upload.id, sha256, upload.offset)
        except ProblemError:
            await asyncio.to_thread(self._storage.delete, upload.id)
            raise
        targets = _targets(upload)
        job = await self._on_image(image, targets) if targets else None
        upload = replace(upload, image=image.id, job=job)
        await asyncio.to_thread(self._storage.save, upload)
        log.info("upload %s complete: image %s, job %s", upload.id, image.id, job)
        return upload


def _tus_errors(handler: Handler) -> Handler:
    """Refusals are answered in tus too: every response carries Tus-Resumable."""

    async def answer(request: Request, **params: str) -> None:
        try:
            await handler(request, **params)
        except ProblemError as error:
            error.headers.setdefault("tus-resumable", VERSION)
            raise

    return answer


async def _respond(request: Request, status: int, headers: dict[str, str]) -> None:
    raw = [(b"tus-resumable", VERSION.encode()), *((k.encode(), v.encode()) for k, v in headers.items())]
    if status != 204 and request.method != "HEAD":  # a HEAD's length would be its GET's
        raw.append((b"content-length", b"0"))
    await request.send({"type": "http.response.start", "status": status, "headers": raw})
    await request.send({"type": "http.response.body", "body": b""})


def _targets(upload: Upload) -> tuple[str, ...]:
    """The pipeline targets the upload's metadata asks for: all when it names none, none (store
    only) when `targets` is empty; parts start no job."""
    metadata = upload.info()
    if upload.concat == "partial":
        return ()
    return parse_targets(metadata["targets"] or "" if "targets" in metadata else None)


def _result(upload: Upload) -> dict[str, str]:
    headers = {}
    if upload.image:
        headers["wirelab-image"] = upload.image
    if upload.job:
        headers["wirelab-job"] = upload.job
    return headers


def _expiry(upload: Upload) -> dict[str, str]:
    return {"upload-expires": state_headers(upload)["upload-expires"]}


def _url(request: Request, upload_id: str) -> str:
    host = request.headers.get("host") or "{}:{}".format(*request.scope.get("server", ("localhost", 80)))
    return f"{request.scope.get('scheme', 'http')}://{host}/uploads/{upload_id}"


def _hash_prefix(file: IO[bytes], size: int) -> Any:
    digest = hashlib.sha256()
    file.seek(0)
    remaining = size
    while remaining and (block := file.read(min(_HASH_BLOCK, remaining))):
        digest.update(block)
        remaining -= len(block)
    return digest

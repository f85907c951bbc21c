"""Where tus uploads live while they fill: a small interface, and its local-disk implementation.

On disk an upload is two files: `ID` with the bytes and `ID.json` with its state (`proto.tus.Upload`).
The state is the truth: its offset only moves after the bytes before it are written, and it is
replaced atomically (write, then rename), so a crash at any moment leaves an upload that resumes at
an offset whose bytes are all there. Bytes past the offset are garbage that the next PATCH overwrites.

Writers hold an exclusive, non-blocking `flock` on the data file: a second PATCH (or a DELETE) of the
same upload while one is running is refused with 423, in this process or any other sharing the disk.
Every method blocks; the endpoint runs them in a worker thread.
"""

from __future__ import annotations

import fcntl
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol

from wirelab.errors import Locked, NotFound
from wirelab.proto.tus import Upload

__all__ = ["DiskUploads", "UploadStorage"]

_ID = re.compile(r"^[0-9a-f]{32}$")
_COPY_BYTES = 1 << 20


class UploadStorage(Protocol):
    def create(self, upload: Upload) -> None: ...

    def load(self, upload_id: str) -> Upload: ...

    def save(self, upload: Upload) -> None: ...

    def open_locked(self, upload_id: str) -> IO[bytes]: ...

    def read(self, upload_id: str, size: int) -> bytes: ...

    def join(self, upload_id: str, part_ids: list[str], observe: Callable[[bytes], None]) -> None: ...

    def data_path(self, upload_id: str) -> Path: ...

    def delete(self, upload_id: str) -> None: ...

    def ids(self) -> list[str]: ...


class DiskUploads:
    def __init__(self, root: Path) -> None:
        self.root = root

    def create(self, upload: Upload) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_path(upload.id).touch(exist_ok=False)
        self.save(upload)

    def load(self, upload_id: str) -> Upload:
        try:
            return Upload.from_json(json.loads(self._state_path(upload_id).read_text()))
        except FileNotFoundError:
            raise NotFound(f"no upload {upload_id}") from None

    def save(self, upload: Upload) -> None:
        state = self._state_path(upload.id)
        temporary = state.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(upload.to_json()))
        temporary.rename(state)

    def open_locked(self, upload_id: str) -> IO[bytes]:
        """The data file opened for writing, locked for us alone until it is closed."""
        try:
            file = self.data_path(upload_id).open("r+b")
        except FileNotFoundError:
            raise NotFound(f"no upload {upload_id}") from None
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise Locked(f"upload {upload_id} is being written by another request") from None
        return file

    def read(self, upload_id: str, size: int) -> bytes:
        with self.data_path(upload_id).open("rb") as file:
            return file.read(size)

    def join(self, upload_id: str, part_ids: list[str], observe: Callable[[bytes], None]) -> None:
        """Concatenate the parts into `upload_id`'s data, passing every block to `observe` (a hash)."""
        with self.data_path(upload_id).open("wb") as out:
            for part_id in part_ids:
                with self.data_path(part_id).open("rb") as part:
                    while block := part.read(_COPY_BYTES):
                        observe(block)
                        out.write(block)

    def data_path(self, upload_id: str) -> Path:
        """The bytes' file; ids are checked, so a client can never name another path."""
        if not _ID.match(upload_id):
            raise NotFound(f"no upload {upload_id}")
        return self.root / upload_id

    def delete(self, upload_id: str) -> None:
        self._state_path(upload_id).unlink(missing_ok=True)
        self.data_path(upload_id).unlink(missing_ok=True)

    def ids(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return [p.stem for p in self.root.glob("*.json") if _ID.match(p.stem)]

    def _state_path(self, upload_id: str) -> Path:
        return self.data_path(upload_id).with_suffix(".json")

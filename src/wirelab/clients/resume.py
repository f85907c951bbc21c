"""What a resumable upload remembers between runs: its upload URLs, in a small JSON file.

Theory of operation: the server keeps an unfinished upload's bytes; all a rerun needs is where they
are, so the client writes each upload URL down as soon as the server creates it, before a byte is
sent, under a fingerprint of everything that must not change for a resume to be right: the server,
the file (resolved path, size, mtime_ns) and how it is split (the number of parts). A changed file
is a new upload. The entry goes once the upload is complete.

The file is small and rewritten whole (to a temporary file, then renamed, so a crash leaves the old
or the new one) under an exclusive `flock` of a lock file beside it, so uploads running in several
processes never lose each other's entries. An entry untouched for `KEEP_S` is dropped when the file
is next written: by then the server has long expired that upload. Every method blocks; async
callers run them in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["KEEP_S", "Fingerprint", "ResumeFile", "Saved", "default_state_path"]

KEEP_S = 30 * 86400.0


def default_state_path() -> Path:
    """$XDG_CACHE_HOME/wirelab/uploads.json, or ~/.cache/... (XDG says: ignore a relative value)."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(cache) if os.path.isabs(cache) else Path.home() / ".cache"
    return root / "wirelab" / "uploads.json"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    server: str
    path: str
    size: int
    mtime_ns: int
    parallel: int
    """The parts the file is cut into: as many as asked, but never more than it has bytes."""

    @classmethod
    def of(cls, server: str, path: Path, parallel: int) -> Fingerprint:
        """The fingerprint of `path` as it is now (blocking: it stats the file)."""
        resolved = path.resolve()
        stat = resolved.stat()
        parts = max(1, min(parallel, stat.st_size))
        return cls(server.rstrip("/"), str(resolved), stat.st_size, stat.st_mtime_ns, parts)

    @property
    def key(self) -> str:
        fields = [self.server, self.path, self.size, self.mtime_ns, self.parallel]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Saved:
    """One upload's URLs: its parts (None where not created yet) and, once made, the final one."""

    parts: tuple[str | None, ...]
    final: str | None = None


class ResumeFile:
    def __init__(self, path: Path | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path or default_state_path()
        self._clock = clock

    def get(self, fingerprint: Fingerprint) -> Saved | None:
        entry = self._read().get(fingerprint.key)
        if entry is None or len(entry["parts"]) != fingerprint.parallel:
            return None
        return Saved(tuple(entry["parts"]), entry.get("final"))

    def save_part(self, fingerprint: Fingerprint, index: int, url: str) -> None:
        with self._editing() as entries:
            entry = entries.get(fingerprint.key) or self._new_entry(fingerprint)
            entry["parts"][index] = url
            entry["touched_at"] = self._clock()
            entries[fingerprint.key] = entry

    def save_final(self, fingerprint: Fingerprint, url: str) -> None:
        with self._editing() as entries:
            entry = entries.get(fingerprint.key) or self._new_entry(fingerprint)
            entry.update(final=url, touched_at=self._clock())
            entries[fingerprint.key] = entry

    def forget(self, fingerprint: Fingerprint) -> None:
        with self._editing() as entries:
            entries.pop(fingerprint.key, None)

    def _new_entry(self, fingerprint: Fingerprint) -> dict[str, Any]:
        return {
            "server": fingerprint.server,
            "path": fingerprint.path,
            "size": fingerprint.size,
            "mtime_ns": fingerprint.mtime_ns,
            "parts": [None] * fingerprint.parallel,
            "final": None,
        }

    def _read(self) -> dict[str, Any]:
        try:
            document = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError:
            return {}  # a damaged file costs a fresh start, never a crash
        uploads = document.get("uploads") if isinstance(document, dict) else None
        return uploads if isinstance(uploads, dict) else {}

    @contextlib.contextmanager
    def _editing(self) -> Iterator[dict[str, Any]]:
        """The entries, to change in place; written back (without the stale ones) on the way out."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.with_suffix(".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries = self._read()
            yield entries
            oldest = self._clock() - KEEP_S
            fresh = {k: v for k, v in entries.items() if v.get("touched_at", 0) >= oldest}
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(json.dumps({"version": 1, "uploads": fresh}, indent=1) + "\n")
            temporary.replace(self.path)

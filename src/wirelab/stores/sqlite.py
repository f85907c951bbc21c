"""The embedded store: SQLite in WAL mode, driven from one dedicated thread.

Theory of operation: sqlite3 blocks, and a blocking call on the event loop stalls every connection the
server holds. So every statement runs on a single worker thread that owns the connection; the loop
awaits its result. One thread also keeps statements in submission order, which the feed relies on
(versions are made durable in the order they were assigned).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from wirelab.errors import ConfigError
from wirelab.feed import Entry

__all__ = ["SQLiteStore", "open_store"]

T = TypeVar("T")

_MIGRATIONS = [
    """
    CREATE TABLE events (
        topic TEXT NOT NULL,
        version INTEGER NOT NULL,
        event TEXT NOT NULL,
        data TEXT NOT NULL,
        published_at REAL NOT NULL,
        final INTEGER NOT NULL,
        PRIMARY KEY (topic, version)
    ) WITHOUT ROWID;
    CREATE TABLE heads (
        topic TEXT PRIMARY KEY,
        version INTEGER NOT NULL,
        final INTEGER NOT NULL
    ) WITHOUT ROWID;
    """,
]


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    async def append(self, entry: Entry) -> None:
        await self._run(self._append, entry)

    async def read(self, topic: str, after: int, limit: int) -> list[Entry]:
        rows = await self._run(
            self._query,
            "SELECT * FROM events WHERE topic = ? AND version > ? ORDER BY version LIMIT ?",
            (topic, after, limit),
        )
        return [_entry(row) for row in rows]

    async def latest(self, topic: str) -> Entry | None:
        rows = await self._run(
            self._query,
            "SELECT * FROM events WHERE topic = ? ORDER BY version DESC LIMIT 1",
            (topic,),
        )
        return _entry(rows[0]) if rows else None

    async def open_topics(self, prefix: str) -> list[Entry]:
        """The latest entry of every topic under `prefix` that has not closed (work to resume)."""
        rows = await self._run(
            self._query,
            "SELECT e.* FROM heads h JOIN events e ON e.topic = h.topic AND e.version = h.version"
            " WHERE h.topic >= ? AND h.topic < ? AND h.final = 0 ORDER BY e.published_at",
            (prefix, prefix + "\uffff"),
        )
        return [_entry(row) for row in rows]

    # -- on the store's thread -------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"store: cannot open SQLite database {self.path}: {exc}") from exc
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    def _append(self, entry: Entry) -> None:
        db = self._conn()
        with db:
            db.execute("BEGIN")
            db.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                (
                    entry.topic,
                    entry.version,
                    entry.event,
                    entry.data_json,
                    entry.published_at,
                    entry.final,
                ),
            )
            db.execute(
                "INSERT INTO heads VALUES (?, ?, ?) ON CONFLICT(topic) DO UPDATE"
                " SET version = excluded.version, final = excluded.final",
                (entry.topic, entry.version, entry.final),
            )

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._conn().execute(sql, params).fetchall()


def _entry(row: tuple[Any, ...]) -> Entry:
    topic, version, event, data, published_at, final = row
    return Entry(topic, version, event, data, published_at, bool(final))


def open_store(url: str, data_dir: Path) -> SQLiteStore:
    """The store a `--store` URL names; `sqlite:` alone means the data directory's database."""
    scheme, _, rest = url.partition(":")
    if scheme != "sqlite":
        raise ConfigError(f"store: unsupported URL {url!r} (this build supports sqlite:PATH)")
    return SQLiteStore(Path(rest) if rest else data_dir / "wirelab.db")

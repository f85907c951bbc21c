"""The embedded store: SQLite in WAL mode, driven from one dedicated thread.

Theory of operation: sqlite3 blocks, and a blocking call on the event loop stalls every connection the
server holds. So every statement runs on a single worker thread that owns the connection; the loop
awaits its result. One thread also keeps statements in submission order, which the feed relies on
(versions are made durable in the order they were assigned), and makes each transaction atomic
within the process. Writes take the database lock up front (BEGIN IMMEDIATE) and wait for it
(busy_timeout), so processes sharing the file (`wirelab serve` beside `wirelab worker`) queue rather
than fail, and a claim's read and write see no other writer in between.

Migrations are numbered by PRAGMA user_version and applied in one transaction under that lock, so a
database written by an older build upgrades in place, and two processes starting at once migrate once.
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
from wirelab.proto.idempotency import Completion, KeyRecord
from wirelab.stores.base import Comment, VersionConflict
from wirelab.stores.rows import ENTRY_COLUMNS, KEY_COLUMNS, comment_of, entry_of, record_of

__all__ = ["SQLiteStore"]

T = TypeVar("T")

BUSY_TIMEOUT_MS = 10_000

_MIGRATIONS: list[tuple[str, ...]] = [
    (
        """CREATE TABLE events (
            topic TEXT NOT NULL,
            version INTEGER NOT NULL,
            event TEXT NOT NULL,
            data TEXT NOT NULL,
            published_at REAL NOT NULL,
            final INTEGER NOT NULL,
            PRIMARY KEY (topic, version)
        ) WITHOUT ROWID""",
        """CREATE TABLE heads (
            topic TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            final INTEGER NOT NULL
        ) WITHOUT ROWID""",
    ),
    (
        # rowid orders comments created in the same instant as they were written.
        """CREATE TABLE comments (
            id TEXT PRIMARY KEY,
            post TEXT NOT NULL,
            text TEXT NOT NULL,
            created_at REAL NOT NULL
        )""",
        "CREATE INDEX comments_by_post ON comments (post, created_at)",
        """CREATE TABLE idempotency (
            key TEXT PRIMARY KEY,
            fingerprint TEXT NOT NULL,
            claimed_at REAL NOT NULL,
            response TEXT
        ) WITHOUT ROWID""",
        "CREATE INDEX idempotency_by_claim ON idempotency (claimed_at)",
    ),
]

_CLAIM = (
    f"INSERT INTO idempotency ({KEY_COLUMNS}) VALUES (?, ?, ?, NULL)"
    " ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint,"
    " claimed_at = excluded.claimed_at, response = NULL"
    " WHERE idempotency.claimed_at < ?"
    " OR (idempotency.response IS NULL AND idempotency.claimed_at < ?)"
)


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None
        self._closed = False

    async def open(self) -> None:
        await self._run(self._open)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._run(self._close)
        self._executor.shutdown(wait=True)

    # -- feed events -----------------------------------------------------------------------------

    async def append(self, entry: Entry, *, completes: Completion | None = None) -> None:
        await self._run(self._write, _append, entry, completes)

    async def read(self, topic: str, after: int, limit: int) -> list[Entry]:
        rows = await self._run(
            self._query,
            f"SELECT {ENTRY_COLUMNS} FROM events WHERE topic = ? AND version > ? ORDER BY version LIMIT ?",
            (topic, after, limit),
        )
        return [entry_of(row) for row in rows]

    async def latest(self, topic: str) -> Entry | None:
        rows = await self._run(
            self._query,
            f"SELECT {ENTRY_COLUMNS} FROM events WHERE topic = ? ORDER BY version DESC LIMIT 1",
            (topic,),
        )
        return entry_of(rows[0]) if rows else None

    async def open_topics(self, prefix: str) -> list[Entry]:
        """The latest entry of every topic under `prefix` that has not closed (work to resume)."""
        rows = await self._run(
            self._query,
            "SELECT e.topic, e.version, e.event, e.data, e.published_at, e.final"
            " FROM heads h JOIN events e ON e.topic = h.topic AND e.version = h.version"
            " WHERE h.topic >= ? AND h.topic < ? AND h.final = 0 ORDER BY e.published_at, e.topic",
            (prefix, prefix + "\uffff"),
        )
        return [entry_of(row) for row in rows]

    # -- comments --------------------------------------------------------------------------------

    async def add_comment(self, comment: Comment, *, completes: Completion | None = None) -> None:
        await self._run(self._write, _add_comment, comment, completes)

    async def comments(self, post: str, *, limit: int = 1000) -> list[Comment]:
        rows = await self._run(
            self._query,
            "SELECT id, post, text, created_at FROM comments WHERE post = ?"
            " ORDER BY created_at, rowid LIMIT ?",
            (post, limit),
        )
        return [comment_of(row) for row in rows]

    async def count_comments(self, post: str) -> int:
        rows = await self._run(self._query, "SELECT count(*) FROM comments WHERE post = ?", (post,))
        count: int = rows[0][0]
        return count

    # -- idempotency records ---------------------------------------------------------------------

    async def claim(
        self, key: str, fingerprint: str, *, now: float, stale_before: float, expired_before: float
    ) -> KeyRecord | None:
        params = (key, fingerprint, now, expired_before, stale_before)
        return await self._run(self._write, _claim, params)

    async def complete(self, completion: Completion) -> None:
        await self._run(self._write, _complete, completion)

    async def release(self, key: str) -> None:
        await self._run(self._change, "DELETE FROM idempotency WHERE key = ? AND response IS NULL", (key,))

    async def sweep_keys(self, *, expired_before: float) -> int:
        return await self._run(
            self._change, "DELETE FROM idempotency WHERE claimed_at < ?", (expired_before,)
        )

    # -- on the store's thread -------------------------------------------------------------------

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._write(_migrate)
        except (OSError, sqlite3.Error) as exc:  # also a file that is not a database
            self._close()
            raise ConfigError(f"store: cannot open SQLite database {self.path}: {exc}") from exc

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the store is not open")
        return self._db

    def _write(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(db, *args)` in one write transaction: all of it is kept, or none if it raises."""
        db = self._conn()
        with db:
            db.execute("BEGIN IMMEDIATE")
            return fn(db, *args)

    def _change(self, sql: str, params: tuple[Any, ...]) -> int:
        changed: int = self._write(lambda db: db.execute(sql, params).rowcount)
        return changed

    def _query(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._conn().execute(sql, params).fetchall()


# -- inside a write transaction --------------------------------------------------------------------


def _migrate(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
        for statement in statements:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {number}")


def _append(db: sqlite3.Connection, entry: Entry, completes: Completion | None) -> None:
    try:
        db.execute(
            f"INSERT INTO events ({ENTRY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
            (entry.topic, entry.version, entry.event, entry.data_json, entry.published_at, entry.final),
        )
    except sqlite3.IntegrityError as exc:  # the primary key: another writer got there first
        raise VersionConflict(entry.topic, entry.version) from exc
    db.execute(
        "INSERT INTO heads VALUES (?, ?, ?) ON CONFLICT (topic) DO UPDATE"
        " SET version = excluded.version, final = excluded.final WHERE excluded.version > heads.version",
        (entry.topic, entry.version, entry.final),
    )
    if completes is not None:
        _complete(db, completes)


def _add_comment(db: sqlite3.Connection, comment: Comment, completes: Completion | None) -> None:
    db.execute(
        "INSERT INTO comments (id, post, text, created_at) VALUES (?, ?, ?, ?)",
        (comment.id, comment.post, comment.text, comment.created_at),
    )
    if completes is not None:
        _complete(db, completes)


def _complete(db: sqlite3.Connection, completion: Completion) -> None:
    db.execute(
        "UPDATE idempotency SET response = ? WHERE key = ?",
        (completion.response.to_json(), completion.key),
    )


def _claim(db: sqlite3.Connection, params: tuple[str, str, float, float, float]) -> KeyRecord | None:
    if db.execute(_CLAIM, params).rowcount:
        return None
    row = db.execute(f"SELECT {KEY_COLUMNS} FROM idempotency WHERE key = ?", params[:1]).fetchone()
    return record_of(row)

"""The store on PostgreSQL, for several instances sharing one source of truth (asyncpg, a pool).

Theory of operation: every write that must be all-or-nothing is one transaction on one pooled
connection. The (topic, version) primary key decides which of two instances wrote a version; the
loser's unique violation becomes VersionConflict and its transaction rolls back whole.

A claim is an upsert that replaces the key's record only when it has expired or its request died:

    INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE expired OR stale

Concurrent inserts of one key wait on its unique index for the first to commit, and an upsert that
finds a row locks it even when its WHERE is false, so the losers' SELECT in the same transaction
reads the winner's record and nobody can change it in between.

Tables live in the schema named by `?schema=NAME` (default `public`), which the connections' search
path selects. Migrations are numbered in a `schema_version` table and applied in one transaction
under an advisory lock keyed by the schema, so instances that start at once migrate one after the
other, and the later ones find nothing left to do.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

import asyncpg

from wirelab.errors import ConfigError
from wirelab.feed import Entry
from wirelab.proto.idempotency import Completion, KeyRecord
from wirelab.stores.base import Comment, VersionConflict
from wirelab.stores.rows import ENTRY_COLUMNS, KEY_COLUMNS, comment_of, entry_of, record_of
from wirelab.stores.urls import redacted, split_schema

__all__ = ["PostgresStore"]

CONNECT_TIMEOUT = 10.0

_MIGRATIONS: list[tuple[str, ...]] = [
    (
        # COLLATE "C": topics compare and sort by their bytes, as in SQLite, whatever the locale.
        """CREATE TABLE events (
            topic text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            event text NOT NULL,
            data text NOT NULL,
            published_at double precision NOT NULL,
            final boolean NOT NULL,
            PRIMARY KEY (topic, version)
        )""",
        """CREATE TABLE heads (
            topic text COLLATE "C" PRIMARY KEY,
            version bigint NOT NULL,
            final boolean NOT NULL
        )""",
    ),
    (
        # seq orders comments created in the same instant as they were written.
        """CREATE TABLE comments (
            seq bigint GENERATED ALWAYS AS IDENTITY,
            id text PRIMARY KEY,
            post text NOT NULL,
            text text NOT NULL,
            created_at double precision NOT NULL
        )""",
        "CREATE INDEX comments_by_post ON comments (post, created_at, seq)",
        """CREATE TABLE idempotency (
            key text PRIMARY KEY,
            fingerprint text NOT NULL,
            claimed_at double precision NOT NULL,
            response text
        )""",
        "CREATE INDEX idempotency_by_claim ON idempotency (claimed_at)",
    ),
]

_CLAIM = (
    f"INSERT INTO idempotency AS r ({KEY_COLUMNS}) VALUES ($1, $2, $3, NULL)"
    " ON CONFLICT (key) DO UPDATE SET fingerprint = excluded.fingerprint,"
    " claimed_at = excluded.claimed_at, response = NULL"
    " WHERE r.claimed_at < $4 OR (r.response IS NULL AND r.claimed_at < $5)"
    " RETURNING true"
)

_COMPLETE = "UPDATE idempotency SET response = $1 WHERE key = $2"

Connection: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"  # generic in the stubs only


class PostgresStore:
    def __init__(self, url: str, *, max_connections: int = 10) -> None:
        self.url = redacted(url)
        self._dsn, self.schema = split_schema(url)
        self._max_connections = max_connections
        self._pool: asyncpg.Pool[asyncpg.Record] | None = None

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._max_connections,
                timeout=CONNECT_TIMEOUT,
                server_settings={"search_path": f'"{self.schema}"', "application_name": "wirelab"},
            )
        except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConfigError(f"store: cannot connect to PostgreSQL at {self.url}: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                await _migrate(conn, self.schema)
        except asyncpg.PostgresError as exc:
            await pool.close()
            raise ConfigError(f"store: cannot migrate PostgreSQL at {self.url}: {exc}") from exc
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    # -- feed events -----------------------------------------------------------------------------

    async def append(self, entry: Entry, *, completes: Completion | None = None) -> None:
        async with self._transaction() as conn:
            try:
                await conn.execute(
                    f"INSERT INTO events ({ENTRY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
                    entry.topic,
                    entry.version,
                    entry.event,
                    entry.data_json,
                    entry.published_at,
                    entry.final,
                )
            except asyncpg.UniqueViolationError as exc:  # the primary key: another writer got there first
                raise VersionConflict(entry.topic, entry.version) from exc
            await conn.execute(
                "INSERT INTO heads AS h VALUES ($1, $2, $3) ON CONFLICT (topic) DO UPDATE SET"
                " version = excluded.version, final = excluded.final WHERE excluded.version > h.version",
                entry.topic,
                entry.version,
                entry.final,
            )
            if completes is not None:
                await _complete(conn, completes)

    async def read(self, topic: str, after: int, limit: int) -> list[Entry]:
        rows = await self._connected().fetch(
            f"SELECT {ENTRY_COLUMNS} FROM events WHERE topic = $1 AND version > $2"
            " ORDER BY version LIMIT $3",
            topic,
            after,
            limit,
        )
        return [entry_of(row) for row in rows]

    async def latest(self, topic: str) -> Entry | None:
        row = await self._connected().fetchrow(
            f"SELECT {ENTRY_COLUMNS} FROM events WHERE topic = $1 ORDER BY version DESC LIMIT 1", topic
        )
        return None if row is None else entry_of(row)

    async def open_topics(self, prefix: str) -> list[Entry]:
        rows = await self._connected().fetch(
            "SELECT e.topic, e.version, e.event, e.data, e.published_at, e.final"
            " FROM heads h JOIN events e ON e.topic = h.topic AND e.version = h.version"
            " WHERE starts_with(h.topic, $1) AND NOT h.final ORDER BY e.published_at, e.topic",
            prefix,
        )
        return [entry_of(row) for row in rows]

    # -- comments --------------------------------------------------------------------------------

    async def add_comment(self, comment: Comment, *, completes: Completion | None = None) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO comments (id, post, text, created_at) VALUES ($1, $2, $3, $4)",
                comment.id,
                comment.post,
                comment.text,
                comment.created_at,
            )
            if completes is not None:
                await _complete(conn, completes)

    async def comments(self, post: str, *, limit: int = 1000) -> list[Comment]:
        rows = await self._connected().fetch(
            "SELECT id, post, text, created_at FROM comments WHERE post = $1"
            " ORDER BY created_at, seq LIMIT $2",
            post,
            limit,
        )
        return [comment_of(row) for row in rows]

    async def count_comments(self, post: str) -> int:
        count: int = await self._connected().fetchval("SELECT count(*) FROM comments WHERE post = $1", post)
        return count

    # -- idempotency records ---------------------------------------------------------------------

    async def claim(
        self, key: str, fingerprint: str, *, now: float, stale_before: float, expired_before: float
    ) -> KeyRecord | None:
        async with self._transaction() as conn:
            if await conn.fetchval(_CLAIM, key, fingerprint, now, expired_before, stale_before):
                return None
            row = await conn.fetchrow(f"SELECT {KEY_COLUMNS} FROM idempotency WHERE key = $1", key)
        assert row is not None, "a claim that conflicted holds the row's lock, so the row is there"
        return record_of(row)

    async def complete(self, completion: Completion) -> None:
        await self._connected().execute(_COMPLETE, completion.response.to_json(), completion.key)

    async def release(self, key: str) -> None:
        await self._connected().execute("DELETE FROM idempotency WHERE key = $1 AND response IS NULL", key)

    async def sweep_keys(self, *, expired_before: float) -> int:
        count: int = await self._connected().fetchval(
            "WITH gone AS (DELETE FROM idempotency WHERE claimed_at < $1 RETURNING 1)"
            " SELECT count(*) FROM gone",
            expired_before,
        )
        return count

    # -- plumbing --------------------------------------------------------------------------------

    def _connected(self) -> asyncpg.Pool[asyncpg.Record]:
        if self._pool is None:
            raise RuntimeError("the store is not open")
        return self._pool

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Connection]:
        """One pooled connection in a transaction: committed if the block ends, rolled back if it raises."""
        async with self._connected().acquire() as conn, conn.transaction():
            yield conn


async def _complete(conn: Connection, completion: Completion) -> None:
    await conn.execute(_COMPLETE, completion.response.to_json(), completion.key)


async def _migrate(conn: Connection, schema: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", zlib.crc32(f"wirelab:{schema}".encode()))
        if not await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema):
            await conn.execute(f'CREATE SCHEMA "{schema}"')
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        version = await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version")
        for number, statements in enumerate(_MIGRATIONS[version:], start=version + 1):
            for statement in statements:
                await conn.execute(statement)
            await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", number)

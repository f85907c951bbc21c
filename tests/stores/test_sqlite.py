"""The SQLite store over a real database file: the contract the feed relies on, and durability."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from wirelab.errors import ConfigError
from wirelab.feed import Entry, Feed
from wirelab.stores import Comment, SQLiteStore, VersionConflict, open_store


def _entry(topic: str, version: int, *, final: bool = False) -> Entry:
    return Entry(topic, version, "progress", f'{{"v":{version}}}', 1000.0 + version, final)


async def test_events_survive_a_reopen_and_read_in_version_order(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    await store.open()
    for version in (1, 2, 3):
        await store.append(_entry("jobs/a", version))
    await store.close()

    again = SQLiteStore(tmp_path / "w.db")
    await again.open()  # the migrations must not run twice
    try:
        assert [e.version for e in await again.read("jobs/a", 1, 10)] == [2, 3]
        assert await again.latest("jobs/a") == _entry("jobs/a", 3)
        assert await again.latest("jobs/none") is None
    finally:
        await again.close()


async def test_a_version_cannot_be_written_twice(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    await store.open()
    try:
        await store.append(_entry("t", 1))
        with pytest.raises(VersionConflict):
            await store.append(_entry("t", 1))
    finally:
        await store.close()


async def test_open_topics_lists_the_unfinished_jobs_only(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    await store.open()
    try:
        await store.append(_entry("jobs/a", 1))
        await store.append(_entry("jobs/b", 1))
        await store.append(_entry("jobs/b", 2, final=True))
        await store.append(_entry("logins", 1))
        assert [(e.topic, e.version) for e in await store.open_topics("jobs/")] == [("jobs/a", 1)]
    finally:
        await store.close()


async def test_a_feed_over_sqlite_resumes_from_the_store(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "w.db")
    await store.open()
    try:
        feed = Feed(store, retention=1)
        for _ in range(4):
            await feed.publish("t", "progress", lambda v: {"v": v})
        assert [e.version for e in await Feed(store).read("t", 1)] == [2, 3, 4]
    finally:
        await store.close()


def test_store_urls_are_checked(tmp_path: Path) -> None:
    assert open_store("sqlite:", tmp_path).path == tmp_path / "wirelab.db"
    assert open_store(f"sqlite:{tmp_path}/x.db", tmp_path).path == tmp_path / "x.db"
    with pytest.raises(ConfigError, match="unsupported"):
        open_store("mysql://x", tmp_path)


async def test_an_unusable_path_is_a_clear_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    store = SQLiteStore(tmp_path / "file" / "w.db")
    with pytest.raises(ConfigError, match="cannot open"):
        await store.open()
    await store.close()


async def test_a_file_that_is_not_a_database_is_a_clear_config_error(tmp_path: Path) -> None:
    (tmp_path / "w.db").write_bytes(b"not a database, just some bytes" * 100)
    store = SQLiteStore(tmp_path / "w.db")
    with pytest.raises(ConfigError, match="cannot open"):
        await store.open()
    await store.close()


V1_SCHEMA = """
CREATE TABLE events (
    topic TEXT NOT NULL, version INTEGER NOT NULL, event TEXT NOT NULL, data TEXT NOT NULL,
    published_at REAL NOT NULL, final INTEGER NOT NULL, PRIMARY KEY (topic, version)
) WITHOUT ROWID;
CREATE TABLE heads (topic TEXT PRIMARY KEY, version INTEGER NOT NULL, final INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO events VALUES ('jobs/a', 1, 'progress', '{"v":1}', 1001.0, 0),
    ('jobs/a', 2, 'progress', '{"v":2}', 1002.0, 0);
INSERT INTO heads VALUES ('jobs/a', 2, 0);
PRAGMA user_version = 1;
"""


async def test_a_database_of_the_first_schema_upgrades_with_its_events(tmp_path: Path) -> None:
    """A data directory written before comments and idempotency keys existed (user_version 1)."""
    with closing(sqlite3.connect(tmp_path / "w.db")) as old:
        old.executescript(V1_SCHEMA)
    store = SQLiteStore(tmp_path / "w.db")
    await store.open()
    try:
        assert await store.read("jobs/a", 0, 10) == [_entry("jobs/a", 1), _entry("jobs/a", 2)]
        assert await store.open_topics("jobs/") == [_entry("jobs/a", 2)]
        await store.append(_entry("jobs/a", 3, final=True))
        await store.add_comment(Comment("c", "p", "hello", 1.0))
        assert await store.count_comments("p") == 1
    finally:
        await store.close()
    with closing(sqlite3.connect(tmp_path / "w.db")) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (2,)


async def test_claims_through_two_stores_on_one_file_have_one_winner(tmp_path: Path) -> None:
    """Processes sharing the file (`serve` beside `worker`) take the write lock in turn."""
    stores = [SQLiteStore(tmp_path / "w.db") for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        claims = [
            stores[n % 2].claim("k", f"f{n}", now=10.0, stale_before=0.0, expired_before=0.0)
            for n in range(40)
        ]
        results = await asyncio.gather(*claims)
        assert sum(record is None for record in results) == 1
    finally:
        for store in stores:
            await store.close()

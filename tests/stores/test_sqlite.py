"""The SQLite store over a real database file: the contract the feed relies on, and durability."""

from __future__ import annotations

from pathlib import Path

import pytest

from wirelab.errors import ConfigError
from wirelab.feed import Entry, Feed
from wirelab.stores import SQLiteStore, open_store


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
    import sqlite3

    store = SQLiteStore(tmp_path / "w.db")
    await store.open()
    try:
        await store.append(_entry("t", 1))
        with pytest.raises(sqlite3.IntegrityError):
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

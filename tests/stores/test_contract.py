"""The store contract (wirelab.stores.Store), run against every engine over a real database.

Idempotency rules follow the IETF httpapi Idempotency-Key draft (draft-ietf-httpapi-idempotency-key-header,
section 2: a key is used once; its stored response answers every retry until it expires).
"""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg
import pytest

from tests.stores.conftest import MakeStore
from wirelab.feed import Entry, Feed
from wirelab.proto.idempotency import Completion, KeyRecord, StoredResponse
from wirelab.stores import Comment, Store, VersionConflict

NOW = 1_700_000_000.0
TTL = 86_400.0
STALE = 30.0
RESPONSE = StoredResponse(
    201, (("content-type", "application/json"), ("location", "/c/1")), b'{"id":"1"}\x00'
)


def _entry(topic: str, version: int, *, final: bool = False, at: float | None = None) -> Entry:
    published_at = 1000.0 + version if at is None else at
    return Entry(topic, version, "progress", f'{{"v":{version}}}', published_at, final)


async def _claim(store: Store, key: str, fingerprint: str = "f", *, now: float = NOW) -> KeyRecord | None:
    return await store.claim(key, fingerprint, now=now, stale_before=now - STALE, expired_before=now - TTL)


# -- feed events -----------------------------------------------------------------------------------


async def test_entries_read_back_oldest_first_after_a_version(store: Store) -> None:
    for version in (1, 2, 3, 4):
        await store.append(_entry("jobs/a", version))
    await store.append(_entry("jobs/b", 1))
    assert await store.read("jobs/a", 1, 10) == [_entry("jobs/a", v) for v in (2, 3, 4)]
    assert [e.version for e in await store.read("jobs/a", 0, 2)] == [1, 2]
    assert await store.read("jobs/a", 4, 10) == []
    assert await store.read("nothing", 0, 10) == []


async def test_latest_is_the_newest_entry_or_none(store: Store) -> None:
    assert await store.latest("t") is None
    await store.append(_entry("t", 1))
    await store.append(_entry("t", 2, final=True))
    assert await store.latest("t") == _entry("t", 2, final=True)


async def test_open_topics_are_the_unfinished_under_a_prefix_in_publishing_order(store: Store) -> None:
    await store.append(_entry("jobs/late", 1, at=30.0))
    await store.append(_entry("jobs/early", 1, at=10.0))
    await store.append(_entry("jobs/early", 2, at=20.0))
    await store.append(_entry("jobs/done", 1, at=5.0))
    await store.append(_entry("jobs/done", 2, final=True, at=6.0))
    await store.append(_entry("jobsx", 1, at=1.0))
    await store.append(_entry("logins", 1, at=1.0))
    opened = await store.open_topics("jobs/")
    assert [(e.topic, e.version) for e in opened] == [("jobs/early", 2), ("jobs/late", 1)]
    assert opened[0] == _entry("jobs/early", 2, at=20.0)


async def test_a_version_written_twice_conflicts_and_keeps_the_first(store: Store) -> None:
    await store.append(_entry("t", 1))
    other = Entry("t", 1, "other", "{}", 5.0, True)
    with pytest.raises(VersionConflict) as caught:
        await store.append(other)
    assert (caught.value.topic, caught.value.version) == ("t", 1)
    assert await store.read("t", 0, 10) == [_entry("t", 1)]
    assert [e.topic for e in await store.open_topics("t")] == ["t"]  # the head did not turn final


async def test_a_feed_over_the_store_resumes_from_it(store: Store) -> None:
    feed = Feed(store, retention=1)
    for _ in range(4):
        await feed.publish("t", "progress", lambda v: {"v": v})
    assert [e.version for e in await Feed(store).read("t", 1)] == [2, 3, 4]


# -- writes with their idempotent response -----------------------------------------------------------


async def test_an_append_completes_its_key_in_the_same_transaction(store: Store) -> None:
    assert await _claim(store, "k") is None
    await store.append(_entry("t", 1), completes=Completion("k", RESPONSE))
    assert await _claim(store, "k") == KeyRecord("k", "f", NOW, RESPONSE)


async def test_a_conflicting_append_completes_nothing(store: Store) -> None:
    await store.append(_entry("t", 1))
    assert await _claim(store, "k") is None
    with pytest.raises(VersionConflict):
        await store.append(_entry("t", 1), completes=Completion("k", RESPONSE))
    assert await _claim(store, "k") == KeyRecord("k", "f", NOW, None)  # still in flight


async def test_a_comment_completes_its_key_in_the_same_transaction(store: Store) -> None:
    assert await _claim(store, "k") is None
    await store.add_comment(Comment("c1", "p", "hi", NOW), completes=Completion("k", RESPONSE))
    assert await _claim(store, "k") == KeyRecord("k", "f", NOW, RESPONSE)
    assert await store.comments("p") == [Comment("c1", "p", "hi", NOW)]


async def test_a_comment_that_fails_completes_nothing(store: Store) -> None:
    await store.add_comment(Comment("c1", "p", "first", NOW))
    assert await _claim(store, "k") is None
    with pytest.raises((sqlite3.IntegrityError, asyncpg.UniqueViolationError)):  # the comment's id
        await store.add_comment(Comment("c1", "p", "again", NOW), completes=Completion("k", RESPONSE))
    assert await _claim(store, "k") == KeyRecord("k", "f", NOW, None)
    assert await store.count_comments("p") == 1


# -- comments ----------------------------------------------------------------------------------------


async def test_comments_read_oldest_first_and_are_counted_per_post(store: Store) -> None:
    for n, at in enumerate((30.0, 10.0, 20.0, 20.0)):
        await store.add_comment(Comment(f"c{n}", "p", f"text {n}", at))
    await store.add_comment(Comment("x", "other", "elsewhere", 1.0))
    assert [c.id for c in await store.comments("p")] == ["c1", "c2", "c3", "c0"]
    assert [c.id for c in await store.comments("p", limit=2)] == ["c1", "c2"]
    assert await store.count_comments("p") == 4
    assert await store.count_comments("none") == 0
    assert await store.comments("none") == []


def test_a_comment_is_json_as_the_api_returns_it() -> None:
    assert Comment("c", "p", "t", 1.5).to_json() == {"id": "c", "post": "p", "text": "t", "created_at": 1.5}


# -- idempotency records -----------------------------------------------------------------------------


async def test_the_first_claim_is_yours_and_a_second_sees_it_in_flight(store: Store) -> None:
    assert await _claim(store, "k", "f1") is None
    assert await _claim(store, "k", "f2", now=NOW + 1) == KeyRecord("k", "f1", NOW, None)


async def test_a_completed_key_returns_its_response_until_it_expires(store: Store) -> None:
    assert await _claim(store, "k") is None
    await store.complete(Completion("k", RESPONSE))
    later = NOW + TTL - 1  # long past stale: a done key is never stale
    assert await _claim(store, "k", "other", now=later) == KeyRecord("k", "f", NOW, RESPONSE)


async def test_an_expired_key_is_claimed_afresh(store: Store) -> None:
    assert await _claim(store, "k", "old") is None
    await store.complete(Completion("k", RESPONSE))
    assert await _claim(store, "k", "new", now=NOW + TTL + 1) is None
    assert await _claim(store, "k", "x", now=NOW + TTL + 2) == KeyRecord("k", "new", NOW + TTL + 1, None)


async def test_a_stale_in_flight_key_is_claimed_again_and_a_fresh_one_is_not(store: Store) -> None:
    """A request that died (its process killed) leaves its key in flight; after `stale` a retry runs."""
    assert await _claim(store, "k") is None
    assert await _claim(store, "k", now=NOW + STALE) == KeyRecord("k", "f", NOW, None)  # not before
    assert await _claim(store, "k", now=NOW + STALE + 1) is None
    assert await _claim(store, "k", now=NOW + STALE + 2) == KeyRecord("k", "f", NOW + STALE + 1, None)


async def test_release_forgets_an_in_flight_key_but_not_a_done_one(store: Store) -> None:
    assert await _claim(store, "k") is None
    await store.release("k")
    assert await _claim(store, "k", now=NOW + 1) is None
    await store.complete(Completion("k", RESPONSE))
    await store.release("k")
    assert await _claim(store, "k", now=NOW + 2) == KeyRecord("k", "f", NOW + 1, RESPONSE)
    await store.release("never-claimed")


async def test_sweeping_deletes_the_keys_claimed_before_and_counts_them(store: Store) -> None:
    for n in range(3):
        assert await _claim(store, f"old{n}", now=NOW + n) is None
    assert await _claim(store, "new", now=NOW + 100) is None
    await store.complete(Completion("old0", RESPONSE))
    assert await store.sweep_keys(expired_before=NOW + 50) == 3
    assert await store.sweep_keys(expired_before=NOW + 50) == 0
    assert await _claim(store, "old0", "other", now=NOW + 101) is None
    assert await _claim(store, "new", now=NOW + 101) == KeyRecord("new", "f", NOW + 100, None)


async def test_of_fifty_concurrent_claims_of_a_key_exactly_one_is_yours(store: Store) -> None:
    results = await asyncio.gather(*(_claim(store, "k", f"f{n}") for n in range(50)))
    winners = [n for n, record in enumerate(results) if record is None]
    assert len(winners) == 1
    assert {r for r in results if r is not None} == {KeyRecord("k", f"f{winners[0]}", NOW, None)}


# -- migrations --------------------------------------------------------------------------------------


async def test_migrations_run_once_and_data_survives_a_reopen(make_store: MakeStore) -> None:
    first = make_store()
    await first.open()
    await first.append(_entry("t", 1))
    await first.add_comment(Comment("c", "p", "t", 1.0))
    assert await _claim(first, "k") is None
    await first.close()
    await first.close()  # closing twice is harmless

    again = make_store()
    await again.open()  # the migrations must not run twice
    try:
        assert await again.read("t", 0, 10) == [_entry("t", 1)]
        assert await again.count_comments("p") == 1
        assert await _claim(again, "k") == KeyRecord("k", "f", NOW, None)
    finally:
        await again.close()


async def test_a_closed_store_says_so(make_store: MakeStore) -> None:
    store = make_store()
    await store.open()
    await store.close()
    with pytest.raises(RuntimeError):
        await store.latest("t")

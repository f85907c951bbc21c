"""The topic log's rules as pure logic: ordering, resume, retention, closing."""

from __future__ import annotations

import pytest

from wirelab.feed import Entry, TopicClosed, TopicLog, Trimmed


def _entry(version: int, *, final: bool = False, topic: str = "t") -> Entry:
    return Entry(topic, version, "progress", "{}", 0.0, final)


def _filled(count: int, retention: int = 100) -> TopicLog:
    log = TopicLog("t", retention=retention)
    for version in range(1, count + 1):
        log.append(_entry(version))
    return log


def test_versions_are_consecutive_and_reads_resume_after_any_version() -> None:
    log = _filled(5)
    assert log.head == 5
    assert [e.version for e in log.after(0, limit=10)] == [1, 2, 3, 4, 5]
    assert [e.version for e in log.after(3, limit=10)] == [4, 5]
    assert [e.version for e in log.after(1, limit=2)] == [2, 3]
    assert log.after(5, limit=10) == []
    assert log.after(9, limit=10) == []


def test_out_of_order_or_foreign_entries_are_refused() -> None:
    log = _filled(2)
    with pytest.raises(ValueError):
        log.append(_entry(4))
    with pytest.raises(ValueError):
        log.append(_entry(3, topic="other"))


def test_retention_bounds_memory_and_older_reads_are_trimmed() -> None:
    log = _filled(10, retention=3)
    assert [e.version for e in log.after(7, limit=10)] == [8, 9, 10]
    with pytest.raises(Trimmed):
        log.after(6, limit=10)


def test_a_final_entry_closes_the_topic() -> None:
    log = _filled(2)
    log.append(_entry(3, final=True))
    assert log.closed
    with pytest.raises(TopicClosed):
        log.append(_entry(4))


def test_a_log_reopened_from_its_last_entry_continues_its_versions() -> None:
    log = TopicLog("t", retention=4, last=_entry(41))
    assert log.head == 41 and log.next_version() == 42
    assert log.latest() == _entry(41)
    with pytest.raises(Trimmed):
        log.after(10, limit=5)


def test_retention_must_be_positive() -> None:
    with pytest.raises(ValueError):
        TopicLog("t", retention=0)

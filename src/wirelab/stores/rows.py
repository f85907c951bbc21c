"""Rows to records, the same for every engine, so that both read back exactly what was written."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wirelab.feed import Entry
from wirelab.proto.idempotency import KeyRecord, StoredResponse
from wirelab.stores.base import Comment

__all__ = ["ENTRY_COLUMNS", "KEY_COLUMNS", "comment_of", "entry_of", "record_of"]

ENTRY_COLUMNS = "topic, version, event, data, published_at, final"
KEY_COLUMNS = "key, fingerprint, claimed_at, response"
"""An idempotency record's response is the JSON of StoredResponse (body in base64), NULL in flight."""


def entry_of(row: Iterable[Any]) -> Entry:
    topic, version, event, data, published_at, final = row
    return Entry(topic, version, event, data, published_at, bool(final))


def comment_of(row: Iterable[Any]) -> Comment:
    id_, post, text, created_at = row
    return Comment(id_, post, text, created_at)


def record_of(row: Iterable[Any]) -> KeyRecord:
    key, fingerprint, claimed_at, response = row
    stored = None if response is None else StoredResponse.from_json(response)
    return KeyRecord(key, fingerprint, claimed_at, stored)

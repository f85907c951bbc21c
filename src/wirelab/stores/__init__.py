"""Durable stores: feed events, comments and idempotency records, on SQLite or PostgreSQL."""

from wirelab.stores.base import Comment, Store, VersionConflict
from wirelab.stores.factory import open_store
from wirelab.stores.sqlite import SQLiteStore

__all__ = ["Comment", "SQLiteStore", "Store", "VersionConflict", "open_store"]

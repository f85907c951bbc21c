"""Durable stores: where the feed's events live when the process does not."""

from wirelab.stores.sqlite import SQLiteStore, open_store

__all__ = ["SQLiteStore", "open_store"]

"""Pick a store by URL: `sqlite:` / `sqlite:PATH` (embedded), `postgresql://...` (PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from wirelab.errors import ConfigError
from wirelab.stores.base import Store
from wirelab.stores.sqlite import SQLiteStore
from wirelab.stores.urls import redacted

__all__ = ["open_store"]


def open_store(url: str, data_dir: Path) -> Store:
    """The store a `--store` URL names, not yet open; `sqlite:` alone is the data directory's database."""
    scheme, _, rest = url.partition(":")
    if scheme == "sqlite":
        return SQLiteStore(Path(rest) if rest else data_dir / "wirelab.db")
    if scheme in ("postgresql", "postgres"):
        from wirelab.stores.postgres import PostgresStore  # asyncpg only when chosen

        return PostgresStore(url)
    raise ConfigError(
        f"store: unsupported URL {redacted(url)!r}; use sqlite:, sqlite:PATH or postgresql://..."
    )

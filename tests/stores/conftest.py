"""The `store` fixture: every store engine, each over a real database.

PostgreSQL runs on the test machines (trust authentication on loopback). Where it is absent its
tests skip with the reason, except under CI=true, where they fail. Each test gets a fresh schema,
dropped afterwards, so tests never see each other's rows and runs leave nothing behind.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

from tests.helpers import unavailable
from wirelab.stores import SQLiteStore, Store
from wirelab.stores.postgres import PostgresStore

PG_URL = os.environ.get("WIRELAB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")

MakeStore = Callable[[], Store]


def with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


@pytest.fixture
async def pg_schema() -> AsyncIterator[str]:
    """A schema name of its own for this test (created by the store), dropped afterwards."""
    try:
        conn = await asyncpg.connect(PG_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {PG_URL} unavailable: {exc!r}")
    schema = f"wltest_{secrets.token_hex(4)}"
    try:
        yield schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """Makes unopened stores, all on the same database, so a test can open one again."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "w.db")
    url = with_schema(PG_URL, request.getfixturevalue("pg_schema"))
    return lambda: PostgresStore(url)


@pytest.fixture
async def store(make_store: MakeStore) -> AsyncIterator[Store]:
    store = make_store()
    await store.open()
    try:
        yield store
    finally:
        await store.close()

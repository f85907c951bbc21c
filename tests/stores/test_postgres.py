"""What only the PostgreSQL store has: URLs with a schema, several instances migrating at once, and
claims raced through separate pools, as separate API instances race."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from tests.stores.conftest import PG_URL, with_schema
from wirelab.errors import ConfigError
from wirelab.feed import Entry
from wirelab.stores import open_store
from wirelab.stores.postgres import PostgresStore
from wirelab.stores.urls import redacted, split_schema


def test_the_schema_comes_out_of_the_url_and_the_password_out_of_messages() -> None:
    url = "postgresql://u:secret@db:5432/app?sslmode=disable&schema=lab_1"
    assert split_schema(url) == ("postgresql://u:secret@db:5432/app?sslmode=disable", "lab_1")
    assert split_schema("postgres://db/app")[1] == "public"
    assert redacted(url) == "postgresql://u@db:5432/app?sslmode=disable&schema=lab_1"
    assert redacted("postgresql://db/app?password=secret") == "postgresql://db/app"
    with pytest.raises(ConfigError, match="identifier"):
        split_schema("postgresql://db/app?schema=x;drop")


def test_store_urls_pick_the_engine(tmp_path: Path) -> None:
    for scheme in ("postgresql", "postgres"):
        store = open_store(f"{scheme}://u@db/app?schema=s", tmp_path)
        assert isinstance(store, PostgresStore) and store.schema == "s"
    with pytest.raises(ConfigError, match="unsupported") as caught:
        open_store("mysql://u:secret@db/app", tmp_path)
    assert "secret" not in str(caught.value)


async def test_an_unreachable_server_is_a_config_error_naming_the_url_without_password() -> None:
    store = PostgresStore("postgresql://wl:secret@127.0.0.1:1/app")
    with pytest.raises(ConfigError, match=r"postgresql://wl@127\.0\.0\.1:1/app") as caught:
        await store.open()
    assert "secret" not in str(caught.value)
    await store.close()


async def test_instances_starting_at_once_migrate_once(pg_schema: str) -> None:
    stores = [PostgresStore(with_schema(PG_URL, pg_schema), max_connections=2) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        conn = await asyncpg.connect(PG_URL)
        try:
            versions = await conn.fetch(f'SELECT version FROM "{pg_schema}".schema_version ORDER BY 1')
        finally:
            await conn.close()
        assert [row["version"] for row in versions] == [1, 2]
        await stores[0].append(Entry("t", 1, "e", "{}", 1.0))
        assert [e.version for e in await stores[3].read("t", 0, 10)] == [1]
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_claims_raced_through_separate_pools_have_one_winner(pg_schema: str) -> None:
    stores = [PostgresStore(with_schema(PG_URL, pg_schema), max_connections=5) for _ in range(3)]
    for store in stores:
        await store.open()
    try:
        claims = [
            stores[n % 3].claim("k", f"f{n}", now=10.0, stale_before=0.0, expired_before=0.0)
            for n in range(60)
        ]
        results = await asyncio.gather(*claims)
        assert sum(record is None for record in results) == 1
    finally:
        for store in stores:
            await store.close()

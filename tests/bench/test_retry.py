"""The retry bench: a seeded fault schedule, a proxy that loses committed responses, and end to end,
small: with Idempotency-Keys every comment is stored once, without them every lost response is a
duplicate (draft-ietf-httpapi-idempotency-key-header, section 2)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from wirelab.bench.commands import bench
from wirelab.bench.faults import FaultSchedule, FaultStats, FaultyProxy

COMMENTS, FAULT_RATE, SEED = 60, 0.3, 7
RESPONSE = b"HTTP/1.1 201 Created\r\nContent-Length: 7\r\nConnection: close\r\n\r\ncreated"

# -- the schedule ------------------------------------------------------------------------------------


def _draws(schedule: FaultSchedule, n: int) -> list[bool]:
    return [schedule.cut_next() for _ in range(n)]


def test_a_seed_gives_the_same_decisions_every_time() -> None:
    first, second = FaultSchedule(0.2, seed=SEED), FaultSchedule(0.2, seed=SEED)
    assert _draws(first, 500) == _draws(second, 500)
    assert first.statistics() == second.statistics()
    assert _draws(FaultSchedule(0.2, seed=SEED + 1), 500) != _draws(FaultSchedule(0.2, seed=SEED), 500)


def test_the_share_cut_is_near_the_rate_and_counted() -> None:
    schedule = FaultSchedule(0.2, seed=SEED)
    cut = sum(_draws(schedule, 10_000))
    assert schedule.statistics() == FaultStats(delivered=10_000 - cut, cut=cut)
    assert 1_800 < cut < 2_200


def test_rates_zero_and_one_are_never_and_always() -> None:
    assert not any(_draws(FaultSchedule(0, seed=SEED), 1000))
    assert all(_draws(FaultSchedule(1, seed=SEED), 1000))


@pytest.mark.parametrize("rate", [-0.1, 1.5])
def test_a_rate_outside_0_to_1_is_refused(rate: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        FaultSchedule(rate, seed=SEED)


# -- the proxy, in front of a counting server ---------------------------------------------------------


class _Server:
    """Answers every request with 201 and closes, counting what it committed."""

    def __init__(self) -> None:
        self.committed = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            writer.close()  # the proxy hung up before the request was whole: nothing to commit
            return
        length = next(
            (
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            ),
            0,
        )
        await reader.readexactly(length)
        self.committed += 1
        writer.write(RESPONSE)
        await writer.drain()
        writer.close()
        await writer.wait_closed()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[_Server, int]]:
    target = _Server()
    server = await asyncio.start_server(target.handle, "127.0.0.1", 0)
    async with server:
        yield target, server.sockets[0].getsockname()[1]


async def _post(url: str) -> httpx.Response:
    async with httpx.AsyncClient(headers={"connection": "close"}) as client:
        return await client.post(f"{url}/comments", json={"post": "p", "text": "t"})


async def test_a_delivered_response_arrives_intact(upstream: tuple[_Server, int]) -> None:
    target, port = upstream
    async with FaultyProxy(port, FaultSchedule(0, seed=SEED)) as proxy:
        response = await _post(proxy.url)
        await proxy.wait_idle()
    assert (response.status_code, response.text) == (201, "created")
    assert target.committed == 1
    assert proxy.schedule.statistics() == FaultStats(delivered=1, cut=0)


async def test_a_cut_response_was_committed_but_never_arrives(upstream: tuple[_Server, int]) -> None:
    target, port = upstream
    async with FaultyProxy(port, FaultSchedule(1, seed=SEED)) as proxy:
        with pytest.raises(httpx.TransportError):
            await _post(proxy.url)
        await proxy.wait_idle()
    assert target.committed == 1
    assert proxy.schedule.statistics() == FaultStats(delivered=0, cut=1)


async def test_the_proxy_leaves_no_task_behind(upstream: tuple[_Server, int]) -> None:
    _, port = upstream
    async with FaultyProxy(port, FaultSchedule(0.5, seed=SEED)) as proxy:
        results = await asyncio.gather(*(_post(proxy.url) for _ in range(20)), return_exceptions=True)
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)  # open when it stops
        writer.write(b"POST /comments HTTP/1.1\r\n")
    with contextlib.suppress(ConnectionResetError):
        assert await reader.read() == b""  # the proxy hung up on us
    writer.close()
    names = {getattr(task.get_coro(), "__qualname__", "") for task in asyncio.all_tasks()}
    assert not {"LoopbackProxy._session", "_forward"} & names
    stats = proxy.schedule.statistics()
    assert stats.cut == sum(isinstance(r, httpx.TransportError) for r in results)
    assert stats.delivered + stats.cut == 20


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    path = tmp_path_factory.mktemp("retry") / "retry.json"
    options = ["--comments", COMMENTS, "--fault-rate", FAULT_RATE, "--seed", SEED, "--concurrency", 4]
    result = CliRunner().invoke(bench, ["retry", *map(str, options), "--json", str(path)])
    assert result.exit_code == 0, result.output
    document = json.loads(path.read_text())
    assert document["scenario"] == "retry"
    assert document["plan"]["comments"] == COMMENTS
    return {row["mode"]: row for row in document["rows"]}


@pytest.mark.bench
def test_with_keys_every_comment_is_stored_exactly_once(rows: dict[str, dict[str, Any]]) -> None:
    keyed = rows["with-keys"]
    assert keyed["comments_intended"] == keyed["comments_stored"] == COMMENTS
    assert keyed["duplicates"] == 0
    assert keyed["faults_injected"] > 0
    assert 0 < keyed["replays_seen"] <= keyed["faults_injected"]
    assert keyed["retries"] >= keyed["faults_injected"] - keyed["gave_up"]


@pytest.mark.bench
def test_without_keys_every_lost_response_is_a_duplicate(rows: dict[str, dict[str, Any]]) -> None:
    """Every request reached the server and was committed; each one beyond the first per comment
    was a retry after a cut, so duplicates are the retries, which are the faults but the last cut of
    each comment given up."""
    bare = rows["without-keys"]
    assert bare["duplicates"] > 0
    assert bare["duplicates"] == bare["retries"] == bare["faults_injected"] - bare["gave_up"]
    assert bare["comments_stored"] == bare["requests"]
    assert bare["replays_seen"] == 0


@pytest.mark.bench
def test_rows_have_the_table_fields(rows: dict[str, dict[str, Any]]) -> None:
    assert list(rows) == ["with-keys", "without-keys"]
    keys = {"comments_intended", "comments_stored", "duplicates", "retries", "faults_injected"}
    for row in rows.values():
        assert set(row) >= keys | {"mode", "replays_seen", "requests_per_s"}
        assert row["requests_per_s"] > 0

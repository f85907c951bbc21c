"""Our Python clients against a real server: same versions, same order, whatever the transport."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.helpers import create_job
from wirelab.clients import TRANSPORTS, Update, follower_for
from wirelab.clients.jobs import JobsClient, ServiceError
from wirelab.testing import ServerProcess


async def _follow(via: str, url: str, job_id: str, after: int | None = None) -> tuple[list[Update], int]:
    follower = follower_for(via, url, interval=0.05, wait=5)
    try:
        updates = [u async for u in follower.follow(f"jobs/{job_id}", after=after)]
    finally:
        await follower.aclose()
    return updates, follower.requests


@pytest.mark.parametrize("via", ["long", "sse", "ws"])
async def test_push_and_long_poll_clients_see_every_version(server: ServerProcess, via: str) -> None:
    job = create_job(server.url, steps=5, step_ms=40)
    updates, requests = await _follow(via, server.url, job["id"], after=0)
    assert [u.version for u in updates] == list(range(1, len(updates) + 1))
    assert updates[-1].event == "done" and updates[-1].final
    assert requests == (len(updates) if via == "long" else 1)


async def test_short_polling_sees_an_ordered_subset_ending_done(server: ServerProcess) -> None:
    job = create_job(server.url, steps=5, step_ms=40)
    updates, requests = await _follow("short", server.url, job["id"])
    versions = [u.version for u in updates]
    assert versions == sorted(set(versions)) and updates[-1].event == "done"
    assert requests >= len(updates)


async def test_get_asks_exactly_once(server: ServerProcess) -> None:
    job = create_job(server.url, steps=50, step_ms=50)
    updates, requests = await _follow("get", server.url, job["id"])
    assert requests == 1 and len(updates) == 1 and not updates[0].final
    assert TRANSPORTS == ("get", "short", "long", "sse", "ws")


async def test_jobs_client_raises_the_problem(server: ServerProcess) -> None:
    client = JobsClient(server.url)
    try:
        with pytest.raises(ServiceError) as caught:
            await client.submit({"kind": "video"})
        assert caught.value.status == 422 and "kind" in caught.value.problem["detail"]
        login = await client.login("ada")
        assert login["topic"] == "logins" and login["version"] >= 1
    finally:
        await client.aclose()


@pytest.mark.parametrize("via", ["sse", "ws"])
async def test_push_clients_reconnect_across_a_restart_and_miss_nothing(tmp_path: Path, via: str) -> None:
    """The SSE client waits the server's retry hint (2 s), the WebSocket client 1 s, then resumes."""
    first = ServerProcess(tmp_path).start()
    second = ServerProcess(tmp_path, port=first.port)
    job = create_job(first.url, steps=40, step_ms=50)
    follower = follower_for(via, first.url)
    seen: list[int] = []

    async def restart_soon() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(first.stop)
        await asyncio.to_thread(second.start)

    try:
        restarter = asyncio.create_task(restart_soon())
        async for update in follower.follow(f"jobs/{job['id']}", after=0):
            seen.append(update.version)
        await restarter
    finally:
        await follower.aclose()
        first.kill()
        second.kill()
    assert seen == list(range(1, len(seen) + 1))
    assert seen[-1] > 3 and follower.reconnects >= 1  # type: ignore[attr-defined]

"""The pull clients: one GET, a GET repeated at an interval, and long polling.

Polling sees snapshots, not events: it yields an update whenever the version it reads is new, so
short polling skips whatever changed and changed again between two polls, which is part of the lesson.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from wirelab.clients.base import Update, update_from_snapshot
from wirelab.clients.jobs import checked

__all__ = ["GetFollower", "LongPollFollower", "ShortPollFollower"]


class _Poller:
    def __init__(self, base_url: str, *, timeout: float = 75.0) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self.requests = 0

    async def _get(self, topic: str, params: dict[str, str] | None = None) -> Update:
        self.requests += 1
        response = await self._http.get(f"/{topic}", params=params)
        checked(response)
        return update_from_snapshot(response.content)

    async def aclose(self) -> None:
        await self._http.aclose()


class GetFollower(_Poller):
    """Request/response: one GET, one answer, whatever state the job is in."""

    async def follow(self, topic: str, *, after: int | None = None) -> AsyncIterator[Update]:
        yield await self._get(topic)


class ShortPollFollower(_Poller):
    def __init__(self, base_url: str, *, interval: float = 1.0) -> None:
        super().__init__(base_url)
        self.interval = interval

    async def follow(self, topic: str, *, after: int | None = None) -> AsyncIterator[Update]:
        seen = after if after is not None else -1
        while True:
            update = await self._get(topic)
            if update.version > seen:
                seen = update.version
                yield update
                if update.final:
                    return
            await asyncio.sleep(self.interval)


class LongPollFollower(_Poller):
    def __init__(self, base_url: str, *, wait: float = 30.0) -> None:
        super().__init__(base_url, timeout=wait + 15)
        self.wait = wait

    async def follow(self, topic: str, *, after: int | None = None) -> AsyncIterator[Update]:
        update = await self._get(topic) if after is None else None
        if update is not None:
            yield update
            if update.final:
                return
        seen = update.version if update is not None else (after or 0)
        while True:
            update = await self._get(topic, {"after": str(seen), "wait": str(self.wait)})
            if update.version > seen:  # else the wait ran out: ask again
                seen = update.version
                yield update
                if update.final:
                    return

"""An SSE client that behaves like a browser's EventSource: it resumes with Last-Event-ID.

If the stream drops before a final event, it waits the server's `retry:` hint and reconnects from the
last id it saw, so no event is lost or repeated; `reconnects` counts how often that happened.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx

from wirelab.clients.base import Update
from wirelab.clients.jobs import checked
from wirelab.proto.sse import Retry, ServerSentEvent, SSEDecoder

__all__ = ["SSEFollower"]


class SSEFollower:
    def __init__(self, base_url: str, *, max_reconnects: int = 10) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10, read=None))
        self._max_reconnects = max_reconnects
        self.requests = 0
        self.reconnects = 0
        self.retry_s = 2.0

    async def follow(self, topic: str, *, after: int | None = None) -> AsyncIterator[Update]:
        last_id = None if after is None else str(after)
        while True:
            try:
                async for update in self._stream(topic, last_id):
                    last_id = str(update.version)
                    yield update
                    if update.final:
                        return
            except (httpx.TransportError, httpx.RemoteProtocolError):
                pass
            if self.reconnects >= self._max_reconnects:
                raise ConnectionError(f"the event stream of {topic} kept dropping; gave up")
            self.reconnects += 1
            await asyncio.sleep(self.retry_s)

    async def _stream(self, topic: str, last_id: str | None) -> AsyncIterator[Update]:
        headers = {"accept": "text/event-stream"}
        if last_id is not None:
            headers["last-event-id"] = last_id
        self.requests += 1
        async with self._http.stream("GET", f"/{topic}/events", headers=headers) as response:
            if response.is_error:
                await response.aread()
                checked(response)
            decoder = SSEDecoder()
            async for chunk in response.aiter_raw():
                for item in decoder.receive_data(chunk):
                    if isinstance(item, Retry):
                        self.retry_s = item.milliseconds / 1000
                    elif isinstance(item, ServerSentEvent):
                        yield Update(int(item.id), item.event, json.loads(item.data))

    async def aclose(self) -> None:
        await self._http.aclose()

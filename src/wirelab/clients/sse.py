"""An SSE client that behaves like a browser's EventSource: it resumes with Last-Event-ID.

If the stream drops before a final event, it waits the server's `retry:` hint and reconnects from the
last id it saw, so no event is lost or repeated; `reconnects` counts how often that happened.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

from wirelab.clients.base import ResumingFollower, Update
from wirelab.clients.jobs import checked
from wirelab.proto.sse import Retry, ServerSentEvent, SSEDecoder

__all__ = ["SSEFollower"]


class SSEFollower(ResumingFollower):
    drops = (httpx.TransportError, httpx.RemoteProtocolError)

    def __init__(self, base_url: str, *, max_reconnects: int = 10) -> None:
        super().__init__(max_reconnects=max_reconnects, retry_s=2.0)  # until the server's hint
        self._http = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10, read=None))

    async def _connect(self, topic: str, after: int | None) -> AsyncIterator[Update]:
        headers = {"accept": "text/event-stream"}
        if after is not None:
            headers["last-event-id"] = str(after)
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

"""A WebSocket push client: subscribes to a topic and resumes from its last version if dropped."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import websockets
from websockets.asyncio.client import ClientConnection, connect

from wirelab.clients.base import ResumingFollower, Update
from wirelab.clients.jobs import ServiceError
from wirelab.proto.pushwire import encode_subscribe

__all__ = ["WebSocketFollower"]


class WebSocketFollower(ResumingFollower):
    drops = (OSError, websockets.ConnectionClosed)

    def __init__(self, base_url: str, *, max_reconnects: int = 10, retry_s: float = 1.0) -> None:
        super().__init__(max_reconnects=max_reconnects, retry_s=retry_s)
        self._url = base_url.replace("http", "ws", 1).rstrip("/") + "/ws"
        self._ws: ClientConnection | None = None

    async def _connect(self, topic: str, after: int | None) -> AsyncIterator[Update]:
        self.requests += 1
        async with connect(self._url, compression=None, max_size=1 << 20) as ws:
            self._ws = ws
            await ws.send(encode_subscribe(topic, after))
            async for raw in ws:
                message = json.loads(raw)
                if "error" in message:
                    problem = message["error"]
                    raise ServiceError(problem.get("status", 400), problem)
                if message.get("topic") == topic and "version" in message:
                    yield Update(message["version"], message["event"], message["data"])

    async def aclose(self) -> None:
        if self._ws is not None:
            await self._ws.close()

"""The ASGI application of `wirelab up`: store, feed, jobs and routes, with an orderly start and stop.

Stopping happens in two steps. `begin_shutdown` (on SIGINT/SIGTERM, before the HTTP server waits for
open connections) closes the feed, so every stream and long poll ends cleanly at once. The ASGI
lifespan shutdown then stops the workers, leaving unfinished jobs in the store to resume, and closes
the store.
"""

from __future__ import annotations

import logging

from wirelab.app.api import build_router
from wirelab.app.config import Config
from wirelab.app.jobs import Jobs
from wirelab.app.kinds import DemoKind, Kind
from wirelab.feed import Feed
from wirelab.http import Receive, Scope, Send
from wirelab.stores import open_store
from wirelab.upload import ImageStore

__all__ = ["WirelabApp"]

log = logging.getLogger("wirelab")


class WirelabApp:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = open_store(config.store, config.data_dir)
        self.feed = Feed(self.store, retention=config.retention, max_lag=config.max_lag)
        kinds: dict[str, Kind] = {k.name: k for k in (DemoKind(),)}
        self.jobs = Jobs(self.feed, kinds, workers=config.workers)
        self.images = ImageStore(config.data_dir / "images")
        self.router = build_router(config, self.feed, self.jobs, self.images)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.router(scope, receive, send)

    def begin_shutdown(self) -> None:
        self.feed.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.store.open()
                    await self.jobs.start(await self.store.open_topics("jobs/"))
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.begin_shutdown()
                await self.jobs.stop()
                await self.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

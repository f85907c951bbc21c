"""The ASGI application of `wirelab up`: store, feed, jobs and routes, with an orderly start and stop.

Stopping happens in two steps. `begin_shutdown` (on SIGINT/SIGTERM, before the HTTP server waits for
open connections) closes the feed, so every stream and long poll ends cleanly at once. The ASGI
lifespan shutdown then stops the workers, leaving unfinished jobs in the store to resume, and closes
the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable

from wirelab.app.api import build_router
from wirelab.app.config import Config
from wirelab.app.jobs import Jobs
from wirelab.app.kinds import DemoKind, DispatchedKind, Kind
from wirelab.app.pipeline import SERVICES, ImageKind, declare_pipeline, run_services, serve
from wirelab.feed import Entry, Feed
from wirelab.http import Receive, Scope, Send
from wirelab.proto.pipeline import PROGRESS, decode_progress
from wirelab.pubsub import BrokerError, Listener, Message, open_broker
from wirelab.stores import open_store
from wirelab.upload import DiskUploads, ImageStore, StoredImage, TusEndpoint

__all__ = ["WirelabApp"]

log = logging.getLogger("wirelab")

WAKE_CHANNEL = "feed"
"""Broadcast channel of the instances' wake-ups: {"instance", "topic", "version"}."""


class WirelabApp:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = open_store(config.store, config.data_dir)
        self._commits: asyncio.Queue[Entry] = asyncio.Queue()
        self.feed = Feed(
            self.store,
            retention=config.retention,
            max_lag=config.max_lag,
            # Other instances hear of commits only through a broker they share with us.
            on_commit=self._commits.put_nowait if config.shared_broker else None,
        )
        self.broker = open_broker(config.broker, namespace=config.namespace)
        self.images = ImageStore(config.data_dir / "images")
        demo: Kind = DispatchedKind(DemoKind(), self.broker) if config.dispatch else DemoKind()
        kinds: dict[str, Kind] = {k.name: k for k in (demo, ImageKind(self.broker, self.images))}
        self.jobs = Jobs(self.feed, kinds, workers=config.workers)
        self.uploads = TusEndpoint(
            DiskUploads(config.data_dir / "uploads"),
            self.images,
            max_size=config.max_image_bytes,
            lifetime_s=config.upload_expiry_s,
            on_image=self._start_image_job,
        )
        self.router = build_router(
            config, self.store, self.feed, self.jobs, self.images, self.uploads, self._start_image_job
        )
        self._consumers: list[asyncio.Task[None]] = []
        self._instance = secrets.token_hex(4)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """ASGI 3 (the server is told so: not being a coroutine function, this would look like ASGI 2
        to detection). It returns the router's awaitable, so no frame of ours waits on it."""
        if scope["type"] == "lifespan":
            return self._lifespan(receive, send)
        return self.router(scope, receive, send)

    async def _start_image_job(self, image: StoredImage, targets: tuple[str, ...]) -> str:
        entry = await self.jobs.submit({"kind": "image", "image": image.id, "targets": list(targets)})
        return entry.topic.removeprefix("jobs/")

    async def _sweep_uploads(self) -> None:
        """Remove expired tus uploads now and then (each is also removed when next asked for)."""
        interval = min(self.config.upload_expiry_s / 2, 600.0)
        while True:
            removed = await self.uploads.sweep()
            if removed:
                log.info("removed %d expired uploads", removed)
            await asyncio.sleep(interval)

    async def _sweep_keys(self) -> None:
        """Forget Idempotency-Keys older than their time to live."""
        ttl = self.config.idempotency_ttl_s
        while True:
            removed = await self.store.sweep_keys(expired_before=time.time() - ttl)
            if removed:
                log.info("forgot %d expired idempotency keys", removed)
            await asyncio.sleep(min(ttl / 2, 600.0))

    async def _tell_others(self) -> None:
        """Broadcast each version this instance commits, so the other instances' readers wake."""
        while True:
            entry = await self._commits.get()
            wake = {"instance": self._instance, "topic": entry.topic, "version": entry.version}
            try:
                await self.broker.broadcast(WAKE_CHANNEL, json.dumps(wake).encode())
            except BrokerError as exc:
                log.warning("could not tell the other instances about %s: %s", entry.topic, exc)

    async def _hear_others(self, listener: Listener) -> None:
        """Take in what other instances committed (the store has it; this is only the wake-up).

        A lost broker connection ends the listener: listen again, and since wake-ups may have been
        missed meanwhile, refresh every topic read here from the store."""
        while True:
            try:
                async for body in listener:
                    wake = json.loads(body)
                    if wake.get("instance") != self._instance:
                        await self.feed.refresh(str(wake.get("topic")))
                return
            except BrokerError as exc:
                log.warning("lost the other instances' wake-ups (%s); listening again", exc)
            finally:
                await listener.close()
            listener = await self._listen_again()
            await self.feed.refresh_all()

    async def _listen_again(self) -> Listener:
        while True:
            try:
                return await self.broker.listen(WAKE_CHANNEL)
            except BrokerError:
                await asyncio.sleep(1.0)

    def begin_shutdown(self) -> None:
        self.feed.close()

    async def _start_pipeline(self) -> None:
        """Queues first, so nothing published is dropped; then the feed bridge and the stages."""
        await self.broker.connect()
        await declare_pipeline(self.broker)

        async def apply(message: Message) -> None:
            await self.jobs.apply(decode_progress(message.body))

        self._consumers = [
            asyncio.create_task(serve(self.broker, "feed", (PROGRESS,), apply)),
            asyncio.create_task(self._sweep_uploads()),
            asyncio.create_task(self._sweep_keys()),
        ]
        if self.config.shared_broker:
            listener = await self.broker.listen(WAKE_CHANNEL)
            self._consumers.append(asyncio.create_task(self._hear_others(listener)))
            self._consumers.append(asyncio.create_task(self._tell_others()))
        if self.config.pipeline:
            stages = run_services(self.broker, self.config.data_dir, list(SERVICES), consumers=2)
            self._consumers.append(asyncio.create_task(stages))

    async def _stop_pipeline(self) -> None:
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.store.open()
                    await self._start_pipeline()
                    # A shared broker keeps the work of unfinished jobs queued; only the
                    # all-in-one process, whose jobs ran here, starts them again itself.
                    unfinished = [] if self.config.dispatch else await self.store.open_topics("jobs/")
                    await self.jobs.start(unfinished)
                except Exception as exc:
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.begin_shutdown()
                await self._stop_pipeline()
                await self.jobs.stop()
                await self.broker.close()
                await self.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

"""The HTTP contract of the Job Status service, every route mapped to its transport adapter.

POST   /jobs                     create a job (Idempotency-Key)    202 + Location + snapshot
GET    /jobs/{id}                snapshot (request/response, short polling)
GET    /jobs/{id}?after=V&wait=S long polling
DELETE /jobs/{id}                cancel
GET    /jobs/{id}/events         Server-Sent Events
POST   /logins                   publish a login to the `logins` topic
GET    /topics/logins?after=V    long polling of logins (404 until the first login)
GET    /topics/logins/events     Server-Sent Events of logins
GET    /ws                       WebSocket push: subscribe to jobs/{id} or logins
GET    /ws/echo                  WebSocket echo
POST   /images?targets=...       upload an image in one request (raw or multipart), start its job
GET    /images/{id}              the stored image's id, size, type and sha256
*      /uploads/                 tus 1.0.0 resumable uploads (upload/tus.py lists the methods)
POST   /comments, GET /comments  comments (app/comments.py), POST retry-safe with Idempotency-Key
POST   /sessions, /tokens        stateful vs stateless authentication (app/auth.py), GET /whoami
GET    /healthz                  liveness, with live counts
GET    /openapi.json             all of the above as an OpenAPI 3.1 document (app/openapi/)
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from typing import Any

from wirelab.app.auth import MAX_USER, auth_routes
from wirelab.app.comments import comment_routes
from wirelab.app.config import Config
from wirelab.app.gallery import gallery_routes
from wirelab.app.jobs import Jobs
from wirelab.app.openapi import build_document
from wirelab.errors import NotFound, Unprocessable
from wirelab.feed import Entry, Feed
from wirelab.http import Request, Router, send_json
from wirelab.http.asgi import send_bytes
from wirelab.http.idempotency import Idempotency, Keyed
from wirelab.proto.idempotency import Completion
from wirelab.proto.pipeline import TARGETS
from wirelab.pull import serve_poll
from wirelab.push import serve_echo, serve_push, serve_sse
from wirelab.stores import Store
from wirelab.upload import ImageHook, ImageStore, TusEndpoint, serve_image_upload

__all__ = ["LOGINS", "build_router"]

LOGINS = "logins"
_JOB_ID = re.compile(r"^[0-9a-f]{16}$")


def build_router(
    config: Config,
    store: Store,
    feed: Feed,
    jobs: Jobs,
    images: ImageStore,
    uploads: TusEndpoint,
    on_image: ImageHook,
) -> Router:
    router = Router()
    idempotency = Idempotency(store, ttl_s=config.idempotency_ttl_s, stale_s=config.idempotency_stale_s)

    async def job_topic(job_id: str) -> str:
        topic = f"jobs/{job_id}"
        if not _JOB_ID.match(job_id) or await feed.latest(topic) is None:
            raise NotFound(f"no job {job_id}")
        return topic

    async def check_topic(topic: str) -> None:
        if topic != LOGINS:
            kind, _, job_id = topic.partition("/")
            if kind != "jobs":
                raise NotFound(f"no topic {topic}; topics are logins and jobs/ID")
            await job_topic(job_id)

    async def create_job(request: Request, keyed: Keyed) -> None:
        def answer(entry: Entry) -> tuple[list[tuple[str, str]], bytes]:
            return [("location", f"/jobs/{entry.topic.removeprefix('jobs/')}")], entry.data_json.encode()

        def completes(entry: Entry) -> Completion | None:
            headers, body = answer(entry)
            return keyed.completion(202, [("content-type", "application/json"), *headers], body)

        entry = await jobs.submit(await request.json(), completes=completes)
        headers, body = answer(entry)
        await send_bytes(request.send, 202, body, content_type="application/json", headers=headers)

    async def get_job(request: Request, job_id: str) -> None:
        await serve_poll(feed, request, await job_topic(job_id))

    async def cancel_job(request: Request, job_id: str) -> None:
        entry = await jobs.cancel(job_id)
        await send_json(request.send, 200, None, raw=entry.data_json)

    async def job_events(request: Request, job_id: str) -> None:
        await serve_sse(
            feed,
            request,
            await job_topic(job_id),
            retry_ms=config.retry_ms,
            heartbeat_s=config.heartbeat_s,
        )

    async def post_login(request: Request) -> None:
        body = await request.json()
        user = body.get("user") if isinstance(body, dict) else None
        if not isinstance(user, str) or not 0 < len(user) <= MAX_USER:
            raise Unprocessable(f"user must be a non-empty string of at most {MAX_USER} characters")
        entry = await feed.publish(
            LOGINS, "login", lambda v: {"user": user, "at": time.time(), "version": v}
        )
        await send_json(request.send, 202, {"topic": LOGINS, "version": entry.version})

    async def poll_logins(request: Request) -> None:
        await serve_poll(feed, request, LOGINS)

    async def login_events(request: Request) -> None:
        await serve_sse(
            feed,
            request,
            LOGINS,
            retry_ms=config.retry_ms,
            heartbeat_s=config.heartbeat_s,
            must_exist=False,
        )

    async def job_output(request: Request, job_id: str, name: str) -> None:
        await job_topic(job_id)
        path = config.data_dir / "outputs" / job_id / f"{name}.jpg"
        if name not in TARGETS or not path.is_file():
            raise NotFound(f"job {job_id} has no output {name}")
        body = await asyncio.to_thread(path.read_bytes)
        await send_bytes(
            request.send, 200, body, content_type="image/jpeg", headers=[("cache-control", "no-cache")]
        )

    async def upload_image(request: Request) -> None:
        await serve_image_upload(request, images, limit=config.max_image_bytes, on_image=on_image)

    async def image_info(request: Request, image_id: str) -> None:
        await send_json(request.send, 200, images.info(image_id).to_json())

    async def healthz(request: Request) -> None:
        status: dict[str, Any] = {
            "status": "ok",
            "feed": feed.statistics(),
            "jobs": jobs.statistics(),
        }
        await send_json(request.send, 200, status)

    router.http("POST", "/jobs", idempotency.wrap(create_job))
    router.http("GET", "/jobs/{job_id}", get_job)
    router.http("DELETE", "/jobs/{job_id}", cancel_job)
    router.http("GET", "/jobs/{job_id}/events", job_events)
    router.http("GET", "/jobs/{job_id}/outputs/{name}", job_output)
    router.http("POST", "/images", upload_image)
    router.http("GET", "/images/{image_id}", image_info)
    router.http("POST", "/logins", post_login)
    router.http("GET", "/topics/logins", poll_logins)
    router.http("GET", "/topics/logins/events", login_events)
    router.http("GET", "/healthz", healthz)
    for method, path, handler in uploads.routes():
        router.http(method, path, handler)
    comment_routes(router, store, idempotency)
    auth_routes(router, config)
    gallery_routes(router)
    router.websocket("/ws", functools.partial(serve_push, feed, check_topic=check_topic))
    router.websocket("/ws/echo", serve_echo)
    document = json.dumps(build_document(max_image_bytes=config.max_image_bytes)).encode()

    async def openapi(request: Request) -> None:
        await send_bytes(request.send, 200, document, content_type="application/json")

    router.http("GET", "/openapi.json", openapi)
    return router

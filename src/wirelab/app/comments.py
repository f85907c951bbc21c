"""Comments: the course's `POST /postcomment`, made safe to retry with an Idempotency-Key.

POST /comments {"post": ID, "text": "..."}   201 + Location + the comment
GET  /comments?post=ID[&limit=N]              the post's oldest comments (at most 1,000), and their count

A comment and its idempotent answer are written in one transaction (`completes`), so a retry after
any failure either replays the answer or finds nothing written and executes afresh.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any, TypeGuard

from wirelab.errors import BadRequest, Unprocessable
from wirelab.http import Request, Router, send_json
from wirelab.http.asgi import send_bytes
from wirelab.http.idempotency import Idempotency, Keyed
from wirelab.stores import Comment, Store

__all__ = ["LIST_LIMIT", "MAX_POST", "MAX_TEXT", "comment_routes"]

MAX_POST = 128
MAX_TEXT = 10_000
LIST_LIMIT = 1000
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


def comment_routes(router: Router, store: Store, idempotency: Idempotency) -> None:
    async def post_comment(request: Request, keyed: Keyed) -> None:
        post, text = _fields(await request.json())
        comment = Comment(secrets.token_hex(8), post, text, time.time())
        body = json.dumps(comment.to_json(), separators=(",", ":")).encode()
        headers = [("location", f"/comments/{comment.id}")]
        completes = keyed.completion(201, [("content-type", "application/json"), *headers], body)
        await store.add_comment(comment, completes=completes)
        await send_bytes(request.send, 201, body, content_type="application/json", headers=headers)

    async def list_comments(request: Request) -> None:
        post = request.query.get("post")
        if not post:
            raise BadRequest("say which post: GET /comments?post=ID")
        if _UNSTORABLE.search(post):
            raise BadRequest("a post id has no NUL characters")
        limit = request.int_param("limit", default=LIST_LIMIT, minimum=1)
        comments = await store.comments(post, limit=min(limit, LIST_LIMIT))
        count = await store.count_comments(post)
        body = {"post": post, "comments": [c.to_json() for c in comments], "count": count}
        await send_json(request.send, 200, body)

    router.http("POST", "/comments", idempotency.wrap(post_comment))
    router.http("GET", "/comments", list_comments)


def _fields(body: Any) -> tuple[str, str]:
    post = body.get("post") if isinstance(body, dict) else None
    text = body.get("text") if isinstance(body, dict) else None
    if not _storable(post, MAX_POST):
        raise _refused("post", MAX_POST)
    if not _storable(text, MAX_TEXT):
        raise _refused("text", MAX_TEXT)
    return post, text


def _refused(name: str, limit: int) -> Unprocessable:
    return Unprocessable(
        f"{name} must be a non-empty string of at most {limit} characters (no NUL, no lone surrogates)"
    )


def _storable(value: Any, limit: int) -> TypeGuard[str]:
    """A non-empty string of at most `limit` characters that every store can hold. A JSON escape can
    spell a lone surrogate (`"\\ud800"`): valid JSON, but no text, and no store can encode it; and
    PostgreSQL's text cannot hold NUL (`"\\u0000"`)."""
    return isinstance(value, str) and 0 < len(value) <= limit and not _UNSTORABLE.search(value)

"""The whole document: the operations of every family, their components, and what is no operation.

WebSockets are no HTTP operations (OpenAPI has no way to say what flows once a socket is open), so
they are told apart, in the description and under `x-websockets`.
"""

from __future__ import annotations

from wirelab.app.openapi import paths
from wirelab.app.openapi.components import components
from wirelab.app.openapi.shapes import Json
from wirelab.app.openapi.uploads import uploads
from wirelab.proto.tus import VERSION

__all__ = ["build_document"]

DESCRIPTION = f"""\
The Job Status service of Wirelab: jobs whose progress every transport delivers from one feed
(request/response, short and long polling, Server-Sent Events, WebSocket), images uploaded in one
request or resumably with tus {VERSION}, comments made retry-safe with Idempotency-Key, and stateful
sessions beside stateless tokens.

Every GET answers HEAD too. Every refusal is an RFC 9457 problem (application/problem+json). Any
request may also be refused before it reaches an operation, whatever its path: 408 (its head came
too slowly), 431 (its head is too large) or 503 with Retry-After (too many connections are open).
Two WebSocket endpoints are no HTTP operations and are described under `x-websockets`: `/ws` (push:
subscribe to `jobs/ID` or `logins`, resumable from a version) and `/ws/echo`.
"""

WEBSOCKETS = {
    "/ws": {
        "description": "Push: any number of topic subscriptions on one socket, each resumable.",
        "client": [
            {"op": "subscribe", "topic": "jobs/ID or logins", "after": "a version (optional)"},
            {"op": "unsubscribe", "topic": "jobs/ID or logins"},
        ],
        "server": [
            {"topic": "jobs/ID or logins", "version": "N", "event": "the event", "data": "the snapshot"},
            {"error": "a problem document; the socket stays open"},
            {"topic": "jobs/ID or logins", "lagged": True, "resume_after": "N; then the socket closes"},
        ],
    },
    "/ws/echo": {"description": "Every message comes back as it was sent, text or binary."},
}
TAGS = ("jobs", "images", "uploads", "logins", "comments", "auth", "service")


def build_document(*, max_image_bytes: int) -> Json:
    """The OpenAPI 3.1 document of a service that takes images of at most `max_image_bytes`."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "Wirelab", "version": "0.1.0", "description": DESCRIPTION},
        "tags": [{"name": tag} for tag in TAGS],
        "paths": {
            **paths.jobs(),
            **paths.images(),
            **uploads(),
            **paths.logins(),
            **paths.comments(),
            **paths.auth(),
            **paths.gallery(),
            **paths.service(),
        },
        "components": components(max_image_bytes=max_image_bytes),
        "x-websockets": WEBSOCKETS,
    }

"""The operations of the service but its uploads: one entry per route of `build_router`.

Each family's operations are listed in the order its routes are registered; what an operation may
answer is what its handler can raise (the problems) or send, read from the handler, not guessed.
"""

from __future__ import annotations

from wirelab.app.comments import LIST_LIMIT
from wirelab.app.gallery import BLOB_LIMIT, THUMBNAILS
from wirelab.app.openapi.components import ID32, IMAGE_TYPES, TARGET_LIST
from wirelab.app.openapi.shapes import (
    Json,
    binary,
    empty,
    events,
    integer,
    json_body,
    json_response,
    links,
    obj,
    op,
    param,
    params,
    path_param,
    problems,
    ref,
    response,
    string,
)
from wirelab.proto.pipeline import TARGETS

__all__ = ["auth", "comments", "gallery", "images", "jobs", "logins", "service"]

BODY_PROBLEMS = (400, 413, 415, 422)
"""What reading and checking a JSON body may refuse: its syntax, its size, its type, its meaning."""


def jobs() -> Json:
    snapshot = ref("schemas", "JobSnapshot")
    follow = links("job_id", "id", "getJob", "cancelJob", "jobEvents", "getJobOutput")
    created = json_response("Queued: the job's first snapshot.", snapshot, "Location", follow)
    output = response("The output, as JPEG.", {"image/jpeg": {"schema": binary("image/jpeg")}})
    return {
        "/jobs": {
            "post": op(
                "createJob",
                "jobs",
                "Create a job",
                {"202": created, **problems(400, 409, 413, 415, 422)},
                parameters=params("IdempotencyKey"),
                requestBody=json_body("JobSpec"),
            ),
        },
        "/jobs/{job_id}": {
            "parameters": params("JobId"),
            "get": op(
                "getJob",
                "jobs",
                "The job's snapshot: now, or with `after` once it changes (long polling)",
                {
                    "200": json_response("The snapshot.", snapshot, "Cache-Control X-Feed-Version"),
                    **problems(400, 404),
                },
                parameters=params("After", "Wait"),
            ),
            "delete": op(
                "cancelJob",
                "jobs",
                "Cancel the job",
                {"200": json_response("Canceled: the final snapshot.", snapshot), **problems(404, 409)},
            ),
        },
        "/jobs/{job_id}/events": {
            "parameters": params("JobId"),
            "get": op(
                "jobEvents",
                "jobs",
                "The job's snapshots as Server-Sent Events, to its final one",
                {
                    "200": events(
                        "One event per version; the stream ends after the final one.", "JobEvent"
                    ),
                    "204": empty("The job has ended, and the client has seen its final event."),
                    **problems(400, 404),
                },
                parameters=params("LastEventId", "StreamAfter"),
            ),
        },
        "/jobs/{job_id}/outputs/{name}": {
            "parameters": [*params("JobId"), path_param("name", {"enum": list(TARGETS)}, "The target.")],
            "get": op("getJobOutput", "jobs", "An image job's output", {"200": output, **problems(404)}),
        },
    }


def images() -> Json:
    follow = {**links("image_id", "id", "getImage"), **links("job_id", "job", "getJob")}
    stored = json_response("Stored.", ref("schemas", "UploadedImage"), "Location Wirelab-Job", follow)
    form = {"schema": ref("schemas", "ImageForm"), "encoding": {"file": {"contentType": "image/*"}}}
    body = {
        **{media: {"schema": binary(media)} for media in IMAGE_TYPES},
        "application/octet-stream": {"schema": binary("image/*")},
        "multipart/form-data": form,
    }
    targets = param(
        "query",
        "targets",
        string(pattern=TARGET_LIST),
        f"The job's outputs, comma-separated, of {', '.join(TARGETS)}: all when absent, none when empty.",
    )
    return {
        "/images": {
            "post": op(
                "uploadImage",
                "images",
                "Upload an image in one request, raw or as a form's file, and start its job",
                {"201": stored, **problems(400, 413, 415, 422)},
                parameters=[targets],
                requestBody={"required": True, "content": body},
            ),
        },
        "/images/{image_id}": {
            "get": op(
                "getImage",
                "images",
                "A stored image's id, size, type and sha256",
                {"200": json_response("The image.", ref("schemas", "StoredImage")), **problems(404)},
                parameters=[path_param("image_id", ID32, "The image's id.")],
            ),
        },
    }


def logins() -> Json:
    latest = json_response("The login.", ref("schemas", "Login"), "Cache-Control X-Feed-Version")
    return {
        "/logins": {
            "post": op(
                "postLogin",
                "logins",
                "Publish a login to the logins topic",
                {
                    "202": json_response("Published.", ref("schemas", "LoginAccepted")),
                    **problems(*BODY_PROBLEMS),
                },
                requestBody=json_body("User"),
            ),
        },
        "/topics/logins": {
            "get": op(
                "pollLogins",
                "logins",
                "The latest login: now, or with `after` once there is a newer one (long polling)",
                {"200": latest, **problems(400, 404)},
                parameters=params("After", "Wait"),
            ),
        },
        "/topics/logins/events": {
            "get": op(
                "loginEvents",
                "logins",
                "Logins as Server-Sent Events (the stream never ends by itself)",
                {"200": events("One event per login.", "LoginEvent"), **problems(400)},
                parameters=params("LastEventId", "StreamAfter"),
            ),
        },
    }


def comments() -> Json:
    created = json_response("Created.", ref("schemas", "Comment"), "Location")
    listed = json_response("The comments, oldest first.", ref("schemas", "Comments"))
    return {
        "/comments": {
            "post": op(
                "postComment",
                "comments",
                "Comment on a post (retry-safe with Idempotency-Key)",
                {"201": created, **problems(400, 409, 413, 415, 422)},
                parameters=params("IdempotencyKey"),
                requestBody=json_body("NewComment"),
            ),
            "get": op(
                "listComments",
                "comments",
                "A post's oldest comments, and their count",
                {"200": listed, **problems(400)},
                parameters=[
                    param("query", "post", string(minLength=1), "The post.", required=True),
                    param(
                        "query", "limit", integer(1, default=LIST_LIMIT), f"At most {LIST_LIMIT} are sent."
                    ),
                ],
            ),
        },
    }


def auth() -> Json:
    session = json_response("Opened.", ref("schemas", "Session"), "Set-Cookie Cache-Control")
    token = json_response("Signed.", ref("schemas", "Token"), "Cache-Control")
    return {
        "/sessions": {
            "post": op(
                "createSession",
                "auth",
                "Open a session, held in this instance's memory only",
                {"201": session, **problems(*BODY_PROBLEMS)},
                requestBody=json_body("User"),
            ),
        },
        "/tokens": {
            "post": op(
                "createToken",
                "auth",
                "Sign a JWT (HS256) that any instance sharing the key accepts",
                {"201": token, **problems(*BODY_PROBLEMS)},
                requestBody=json_body("User"),
            ),
        },
        "/whoami": {
            "get": op(
                "whoami",
                "auth",
                "Who is calling, and how the service knows",
                {"200": json_response("The caller.", ref("schemas", "Identity")), **problems(401)},
                security=[{"bearer": []}, {"session": []}],
            ),
        },
    }


def gallery() -> Json:
    """The page `wirelab bench multiplex` and a browser load over each HTTP version."""

    def static(operation_id: str, summary: str, media_type: str) -> Json:
        ok = response(summary + ".", {media_type: {"schema": binary(media_type)}})
        return {"get": op(operation_id, "gallery", summary, {"200": ok})}

    thumb = static("getGalleryThumbnail", "One generated thumbnail, a PNG of a few KiB", "image/png")
    thumb["get"]["parameters"] = [
        path_param("n", string(pattern="^[0-9]{3}$"), f"Which thumbnail: 000 to {THUMBNAILS - 1:03d}.")
    ]
    thumb["get"]["responses"].update(problems(404))
    blob = static("getGalleryBlob", "One big body, sent in 64 KiB writes", "application/octet-stream")
    blob["get"]["parameters"] = [
        path_param("size", string(pattern="^[0-9]{1,9}$"), f"Its size in bytes, at most {BLOB_LIMIT}.")
    ]
    blob["get"]["responses"].update(problems(404))
    return {
        "/gallery": static(
            "getGallery", f"A page of {THUMBNAILS} thumbnails, a stylesheet and a script", "text/html"
        ),
        "/gallery/style.css": static("getGalleryStyle", "The gallery's stylesheet", "text/css"),
        "/gallery/app.js": static("getGalleryScript", "The gallery's script", "text/javascript"),
        "/gallery/thumbs/{n}.png": thumb,
        "/gallery/blob/{size}": blob,
    }


def service() -> Json:
    document = obj("openapi info paths", {"openapi": string(pattern="^3\\.1\\.")})
    return {
        "/healthz": {
            "get": op(
                "healthz",
                "service",
                "Liveness, with live counts",
                {"200": json_response("Alive.", ref("schemas", "Health"))},
            ),
        },
        "/openapi.json": {
            "get": op(
                "openapi",
                "service",
                "This document",
                {"200": json_response("The OpenAPI 3.1 document.", document)},
            ),
        },
    }

"""The document's components: what the service sends and takes, by name, from the handlers' limits.

The bounds are the ones the handlers check (imported, not copied), so that a limit changed in code
changes here too; the patterns say what the parsers accept (a tus checksum is as long as its digest).
"""

from __future__ import annotations

import hashlib

from wirelab.app.auth import MAX_USER, SESSION_COOKIE
from wirelab.app.comments import MAX_POST, MAX_TEXT
from wirelab.app.jobs import TERMINAL_STATES
from wirelab.app.kinds import DemoKind
from wirelab.app.openapi.shapes import (
    Json,
    binary,
    header,
    integer,
    nullable,
    obj,
    param,
    path_param,
    record,
    ref,
    string,
)
from wirelab.proto.idempotency import MAX_KEY_LENGTH
from wirelab.proto.pipeline import TARGETS
from wirelab.proto.tus import CHECKSUM_ALGORITHMS, EXTENSIONS, VERSION
from wirelab.pull.polling import DEFAULT_WAIT_S, MAX_WAIT_S

__all__ = [
    "DATE_TIME",
    "ID16",
    "ID32",
    "IMAGE_TYPES",
    "METADATA",
    "TARGET_LIST",
    "VERSION_NUMBER",
    "components",
]

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
ID16 = string(pattern="^[0-9a-f]{16}$")
ID32 = string(pattern="^[0-9a-f]{32}$")
SHA256 = string(pattern="^[0-9a-f]{64}$")
DATE_TIME = string(format="date-time")
VERSION_NUMBER = integer(maximum=10**18 - 1)
"""A version or an offset: the service reads at most 18 digits."""

_TARGET = "(?:" + "|".join(TARGETS) + ")"
TARGET_LIST = f"^(?:{_TARGET}(?:,{_TARGET})*)?$"
_BASE64 = "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
_METADATA_PAIR = f"[!#$%&'*+.^_`|~0-9A-Za-z-]+(?: {_BASE64})?"
METADATA = f"^{_METADATA_PAIR}(?:,{_METADATA_PAIR})*$"
"""tus Upload-Metadata: `key base64value` pairs (the value may be left out), comma-separated."""


def _digest_base64(algorithm: str) -> str:
    """The base64 of one `algorithm` digest: so many characters, then its padding."""
    size = hashlib.new(algorithm).digest_size
    padding = -size % 3
    return f"[A-Za-z0-9+/]{{{(size + padding) // 3 * 4 - padding}}}{'=' * padding}"


_CHECKSUM = "^(?:" + "|".join(f"{a} {_digest_base64(a)}" for a in CHECKSUM_ALGORITHMS) + ")$"


def _jobs() -> Json:
    demo = obj(
        "kind",
        {
            "kind": {"const": "demo"},
            "steps": integer(1, maximum=DemoKind.MAX_STEPS, default=10),
            "step_ms": integer(0, maximum=DemoKind.MAX_STEP_MS, default=200),
        },
        additionalProperties=False,
    )
    image = obj(
        "kind image",
        {
            "kind": {"const": "image"},
            "image": {**ID32, "description": "The id of a stored image (POST /images, or tus)."},
            "targets": {"type": "array", "minItems": 1, "items": {"enum": list(TARGETS)}},
        },
        additionalProperties=False,
    )
    output = {
        "name": {"enum": list(TARGETS)},
        "width": integer(),
        "height": integer(),
        "bytes": integer(),
        "sha256": SHA256,
        "url": string(),
    }
    snapshot = {
        "id": ID16,
        "kind": {"enum": ["demo", "image"]},
        "state": {"enum": ["queued", "running", *TERMINAL_STATES]},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "version": integer(1),
        "created_at": DATE_TIME,
        "updated_at": DATE_TIME,
        "params": {"type": "object"},
        "error": nullable(string()),
        "outputs": {"type": "array", "items": ref("schemas", "JobOutput")},
    }
    return {
        "JobSpec": {"oneOf": [demo, image]},
        "JobOutput": record(output),
        "JobSnapshot": record(snapshot),
        "JobEvent": _event(["progress", *TERMINAL_STATES], "JobSnapshot"),
    }


def _images() -> Json:
    image = {
        "id": ID32,
        "sha256": SHA256,
        "bytes": integer(),
        "media_type": {"enum": list(IMAGE_TYPES)},
        "created_at": DATE_TIME,
    }
    upload = {
        "id": ID32,
        "offset": integer(),
        "length": nullable(integer()),
        "complete": {"type": "boolean"},
        "concat": {"enum": ["partial", "final", None]},
        "metadata": {"type": "object", "additionalProperties": nullable(string())},
        "expires": DATE_TIME,
        "image": nullable(ref("schemas", "StoredImage")),
        "job": nullable(ID16),
    }
    started = obj("job", {"job": nullable({**ID16, "description": "The job the image started."})})
    return {
        "StoredImage": record(image),
        "UploadedImage": {"allOf": [ref("schemas", "StoredImage"), started]},
        "ImageForm": obj("file", {"file": binary("image/*")}),
        "Upload": record(upload),
    }


def _people() -> Json:
    """Logins, comments, sessions and tokens: what people post."""
    text = {
        "post": string(minLength=1, maxLength=MAX_POST),
        "text": string(minLength=1, maxLength=MAX_TEXT),
    }
    comment = {"id": ID16, **text, "created_at": {"type": "number"}}
    comments = {
        "post": string(),
        "comments": {"type": "array", "items": ref("schemas", "Comment")},
        "count": integer(),
    }
    return {
        "User": obj("user", {"user": string(minLength=1, maxLength=MAX_USER)}),
        "Login": obj(
            "user at version", {"user": string(), "at": {"type": "number"}, "version": integer(1)}
        ),
        "LoginAccepted": obj("topic version", {"topic": {"const": "logins"}, "version": integer(1)}),
        "LoginEvent": _event(["login"], "Login"),
        "NewComment": obj("post text", text),
        "Comment": record(comment),
        "Comments": record(comments),
        "Session": obj(
            "user session instance", {"user": string(), "session": {"const": True}, "instance": string()}
        ),
        "Token": obj("token expires_in", {"token": string(), "expires_in": integer(1)}),
        "Identity": obj(
            "user via instance",
            {"user": string(), "via": {"enum": ["session", "jwt"]}, "instance": string()},
        ),
    }


def _schemas() -> Json:
    problem = {
        "type": string(format="uri-reference"),
        "title": string(),
        "status": integer(400, maximum=599),
        "detail": string(),
        "instance": string(format="uri-reference"),
    }
    health = {
        "status": {"const": "ok"},
        "feed": _counts("topics waiters followers"),
        "jobs": _counts("active queued"),
    }
    return {
        "Problem": obj(
            "type title status detail",
            problem,
            description="RFC 9457 problem details; some add members of their own (a job's `state`).",
        ),
        **_jobs(),
        **_images(),
        **_people(),
        "Health": record(health),
    }


def _event(names: list[str], data: str) -> Json:
    """One Server-Sent Event: its name, its id (the feed version) and its data (a JSON snapshot)."""
    return obj(
        "event id data",
        {
            "event": {"enum": names},
            "id": string(pattern="^[1-9][0-9]*$"),
            "data": string(contentMediaType="application/json", contentSchema=ref("schemas", data)),
        },
    )


def _counts(names: str) -> Json:
    return obj(names, {name: integer() for name in names.split()})


def _headers() -> Json:
    tus = {
        "Tus-Resumable": header("The tus version of the answer.", {"const": VERSION}, required=True),
        "Tus-Version": header("The tus versions this server speaks.", {"const": VERSION}, required=True),
        "Tus-Extension": header("The extensions served.", {"const": ",".join(EXTENSIONS)}, required=True),
        "Tus-Max-Size": header("The largest upload, in bytes.", integer(), required=True),
        "Tus-Checksum-Algorithm": header(
            "Algorithms of Upload-Checksum.", {"const": ",".join(CHECKSUM_ALGORITHMS)}, required=True
        ),
        "Upload-Offset": header("The bytes received so far.", integer(), required=True),
        "Upload-Length": header("The upload's length, once known.", integer()),
        "Upload-Defer-Length": header("1 while the length is not known.", {"type": "integer", "const": 1}),
        "Upload-Expires": header("When an unfinished upload goes (an RFC 9110 date).", required=True),
        "Upload-Metadata": header("The metadata as the upload was created with it."),
        "Upload-Concat": header("partial, or final;URLS of the parts."),
    }
    return {
        "Location": header("Where the created resource is.", required=True),
        "Cache-Control": header("no-store: a snapshot or a stream is never cached.", required=True),
        "X-Feed-Version": header("The feed version of the snapshot.", integer(1), required=True),
        "Wirelab-Job": header("The job the image started (none when no targets were asked for).", ID16),
        "Wirelab-Image": header("The stored image a complete upload became.", ID32),
        "Set-Cookie": header(f"{SESSION_COOKIE}=ID; HttpOnly; SameSite=Lax; Path=/", required=True),
        "WWW-Authenticate": header("The Bearer challenge (RFC 6750 §3).", required=True),
        "Allow": header("The methods served here.", required=True),
        "Retry-After": header("Seconds to wait before retrying.", integer()),
        **tus,
    }


def _parameters(max_image_bytes: int) -> Json:
    wait = {"type": "number", "minimum": 0, "default": DEFAULT_WAIT_S}
    key = string(minLength=1, maxLength=MAX_KEY_LENGTH, pattern="^[\\x20-\\x7e]+$")
    return {
        "After": param(
            "query", "after", VERSION_NUMBER, "Long polling: answer with the next version after it."
        ),
        "Wait": param(
            "query",
            "wait",
            wait,
            f"Long polling (with `after`): seconds to hold the request, cut to {MAX_WAIT_S:g}; "
            "then the latest snapshot, unchanged.",
        ),
        "StreamAfter": param(
            "query", "after", VERSION_NUMBER, "Resume after this version (Last-Event-ID wins)."
        ),
        "LastEventId": param(
            "header",
            "Last-Event-ID",
            string(pattern="^[0-9]{1,18}$"),
            "The last event id seen: resume after it.",
        ),
        "IdempotencyKey": param(
            "header",
            "Idempotency-Key",
            key,
            "Makes the POST safe to retry: its first answer is stored and replayed (Idempotent-Replayed).",
        ),
        "JobId": path_param("job_id", ID16, "The job's id."),
        "UploadId": path_param("upload_id", ID32, "The upload's id."),
        "TusResumable": param(
            "header", "Tus-Resumable", {"const": VERSION}, "The tus version.", required=True
        ),
        "UploadLength": param(
            "header",
            "Upload-Length",
            integer(maximum=max_image_bytes),
            "The upload's whole length in bytes.",
        ),
        "UploadOffset": param(
            "header",
            "Upload-Offset",
            VERSION_NUMBER,
            "Where the chunk starts: the upload's offset.",
            required=True,
        ),
        "UploadChecksum": param(
            "header",
            "Upload-Checksum",
            string(pattern=_CHECKSUM),
            "The chunk's digest, `algorithm base64`; a mismatch discards the chunk (460).",
        ),
    }


def components(*, max_image_bytes: int) -> Json:
    return {
        "schemas": _schemas(),
        "parameters": _parameters(max_image_bytes),
        "headers": _headers(),
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
        },
    }

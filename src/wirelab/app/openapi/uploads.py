"""The tus 1.0.0 operations (`TusEndpoint.routes`): `/uploads` and `/uploads/` are the same place.

tus speaks in headers: its answers have no body, and every one, refusals too, says Tus-Resumable.
Some rules cannot be put in a schema (Upload-Length or Upload-Defer-Length, one of the two); they
are in the descriptions, and breaking them is a 400.
"""

from __future__ import annotations

from wirelab.app.openapi.components import METADATA, VERSION_NUMBER
from wirelab.app.openapi.shapes import (
    Json,
    binary,
    empty,
    json_response,
    op,
    param,
    params,
    problems,
    ref,
    string,
)
from wirelab.proto.tus import OFFSET_OCTET_STREAM

__all__ = ["uploads"]

TUS = "Tus-Resumable"
CHUNK = {"content": {OFFSET_OCTET_STREAM: {"schema": binary("application/octet-stream")}}}
PATCH_PROBLEMS = (400, 403, 404, 409, 410, 412, 413, 415, 423, 460)
"""A chunk may be refused for its headers, the upload's state or kind, its size, checksum or bytes
(not an image), or because another request is writing the upload."""
CREATION_PROBLEMS = (400, 404, 410, 412, 413, 415, 422, 423, 460)
"""Creation adds the targets named in the metadata (422) and, for a final upload, parts that are
not there (404), expired (410) or being written (423); its first bytes are refused as a chunk's."""


def _discovery(operation_id: str) -> Json:
    headers = f"{TUS} Tus-Version Tus-Extension Tus-Max-Size Tus-Checksum-Algorithm"
    return op(operation_id, "uploads", "tus discovery", {"204": empty("What this server offers.", headers)})


def _creation(suffix: str) -> Json:
    created = empty(
        "Created; with Upload-Offset too when the request carried the first bytes.",
        f"{TUS} Location Upload-Expires Wirelab-Image Wirelab-Job",
    )
    headers = [
        *params("TusResumable", "UploadLength", "UploadChecksum"),
        param(
            "header", "Upload-Defer-Length", {"type": "integer", "const": 1}, "Instead of Upload-Length."
        ),
        param(
            "header",
            "Upload-Metadata",
            string(pattern=METADATA),
            "`key base64value` pairs, comma-separated; `targets` picks the job's outputs.",
        ),
        param(
            "header",
            "Upload-Concat",
            string(pattern="^(partial|final;.+)$"),
            "partial; or final;/uploads/A /uploads/B to join finished parts.",
        ),
    ]
    return {
        "options": _discovery(f"uploadsOptions{suffix}"),
        "post": op(
            f"createUpload{suffix}",
            "uploads",
            "Create an upload (creation, defer-length, concatenation), with its first bytes or not",
            {"201": created, **problems(*CREATION_PROBLEMS, tus=True)},
            parameters=headers,
            requestBody={"required": False, **CHUNK},
        ),
    }


def uploads() -> Json:
    state = f"{TUS} Upload-Offset Upload-Length Upload-Defer-Length Upload-Expires Upload-Metadata"
    head = empty(
        "Where the upload stands.", f"{state} Upload-Concat Cache-Control Wirelab-Image Wirelab-Job"
    )
    written = empty(
        "Written: the new offset.", f"{TUS} Upload-Offset Upload-Expires Wirelab-Image Wirelab-Job"
    )
    method = param(
        "header",
        "X-HTTP-Method-Override",
        {"enum": ["PATCH", "DELETE", "HEAD"]},
        "The method meant.",
        required=True,
    )
    return {
        "/uploads": _creation(""),
        "/uploads/": _creation("Slash"),
        "/uploads/{upload_id}": {
            "parameters": params("UploadId"),
            "options": _discovery("uploadOptions"),
            "head": op(
                "headUpload",
                "uploads",
                "Where the upload stands: resume from its Upload-Offset",
                {"200": head, **problems(404, 410, 412, tus=True)},
                parameters=params("TusResumable"),
            ),
            "get": op(
                "getUpload",
                "uploads",
                "The upload as JSON, with the image and the job it became (not part of tus)",
                {
                    "200": json_response("The upload.", ref("schemas", "Upload"), TUS),
                    **problems(404, 410, tus=True),
                },
            ),
            "patch": op(
                "patchUpload",
                "uploads",
                "Write a chunk at the upload's offset",
                {"204": written, **problems(*PATCH_PROBLEMS, tus=True)},
                parameters=params("TusResumable", "UploadOffset", "UploadLength", "UploadChecksum"),
                requestBody={"required": True, **CHUNK},
            ),
            "delete": op(
                "deleteUpload",
                "uploads",
                "Terminate the upload",
                {"204": empty("Removed.", TUS), **problems(404, 410, 412, 423, tus=True)},
                parameters=params("TusResumable"),
            ),
            "post": op(
                "overrideUpload",
                "uploads",
                "PATCH, DELETE or HEAD for clients that can only GET and POST (X-HTTP-Method-Override)",
                {
                    "200": head,
                    "204": empty("Written or removed.", TUS),
                    **problems(*PATCH_PROBLEMS, 405, tus=True),
                },
                parameters=[
                    method,
                    *params("TusResumable"),
                    param("header", "Upload-Offset", VERSION_NUMBER, "As in PATCH."),
                    *params("UploadLength", "UploadChecksum"),
                ],
                requestBody={"required": False, **CHUNK},
            ),
        },
    }

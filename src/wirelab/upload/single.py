"""`POST /images`: one request carries the whole image, streamed straight to disk.

The body is the image's raw bytes, or a `multipart/form-data` form with the image as its file (what a
browser's `<form>` sends). `?targets=480p,1080p` picks the outputs of the job the image starts;
`?targets=` (empty) stores the image and starts nothing.
"""

from __future__ import annotations

from wirelab.errors import UnsupportedMediaType
from wirelab.http import Request, send_json
from wirelab.proto.pipeline import parse_targets
from wirelab.upload.images import ImageHook, ImageStore
from wirelab.upload.multipart import file_part, is_multipart

__all__ = ["ACCEPTED_CONTENT_TYPES", "serve_image_upload"]

ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream")


async def serve_image_upload(
    request: Request, images: ImageStore, *, limit: int, on_image: ImageHook
) -> None:
    targets = parse_targets(request.query.get("targets"))
    content_type = request.headers.get("content-type", "application/octet-stream")
    chunks = request.stream(limit=limit)
    if is_multipart(content_type):
        chunks = file_part(chunks, content_type)
    elif not content_type.lower().startswith(ACCEPTED_CONTENT_TYPES):
        raise UnsupportedMediaType(
            f"send the image as raw bytes or as the file of a multipart/form-data form, not {content_type}"
        )
    image = await images.save(chunks)
    job = await on_image(image, targets) if targets else None
    headers = [("location", f"/images/{image.id}")] + ([("wirelab-job", job)] if job else [])
    await send_json(request.send, 201, {**image.to_json(), "job": job}, headers=headers)

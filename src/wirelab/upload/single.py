"""`POST /images`: one request carries the whole image as its raw body, streamed straight to disk."""

from __future__ import annotations

from wirelab.http import Request, send_json
from wirelab.upload.images import ImageStore, UnsupportedMediaType

__all__ = ["ACCEPTED_CONTENT_TYPES", "serve_image_upload"]

ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream")


async def serve_image_upload(request: Request, images: ImageStore, *, limit: int) -> None:
    content_type = request.headers.get("content-type", "application/octet-stream")
    if not content_type.lower().startswith(ACCEPTED_CONTENT_TYPES):
        raise UnsupportedMediaType(f"send the image as its raw bytes, not {content_type}")
    image = await images.save(request.stream(limit=limit))
    await send_json(request.send, 201, image.to_json(), headers=[("location", f"/images/{image.id}")])

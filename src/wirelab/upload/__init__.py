"""Uploads: one big request streamed to disk (and, later, resumable tus uploads)."""

from wirelab.upload.images import ImageStore, StoredImage, UnsupportedMediaType
from wirelab.upload.single import serve_image_upload

__all__ = ["ImageStore", "StoredImage", "UnsupportedMediaType", "serve_image_upload"]

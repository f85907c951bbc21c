"""Uploads: one big request streamed to disk, or a resumable tus 1.0.0 upload in chunks."""

from wirelab.upload.images import ImageHook, ImageStore, StoredImage
from wirelab.upload.single import serve_image_upload
from wirelab.upload.storage import DiskUploads, UploadStorage
from wirelab.upload.tus import TusEndpoint

__all__ = [
    "DiskUploads",
    "ImageHook",
    "ImageStore",
    "StoredImage",
    "TusEndpoint",
    "UploadStorage",
    "serve_image_upload",
]

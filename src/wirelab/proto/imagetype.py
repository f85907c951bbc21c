"""Tell an image's type from its first bytes (its magic number), never from what a client claims."""

from __future__ import annotations

__all__ = ["SNIFF_BYTES", "sniff_image_type"]

SNIFF_BYTES = 12

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def sniff_image_type(head: bytes) -> str | None:
    """The media type of an image starting with `head` (at least SNIFF_BYTES of it), or None."""
    for signature, media_type in _SIGNATURES:
        if head.startswith(signature):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None

"""The gallery: one page that costs a browser 103 requests, to watch each HTTP version load it.

GET /gallery                 the HTML page: 100 thumbnails, one stylesheet, one script
GET /gallery/style.css       the stylesheet
GET /gallery/app.js          the script: it shows which protocol carried the page and its images
GET /gallery/thumbs/{n}.png  thumbnail n (000 to 099), a generated PNG of a few KiB
GET /gallery/blob/{size}     `size` bytes (at most 64 MiB) in 64 KiB writes: one big body, to watch
                             flow control (HTTP/2 windows) and loss recovery (HTTP/3) at work

A page of many small resources is where the versions differ most: HTTP/1.1 queues them on a few
connections (a browser opens six), HTTP/2 multiplexes them on one TCP connection (and one lost packet
stalls them all), HTTP/3 multiplexes them on QUIC streams that are lost and resent one by one. The
thumbnails are generated, not read from the pipeline's outputs, so the page is the same size on every
machine and every run: figures from `wirelab bench multiplex` compare like with like.
"""

from __future__ import annotations

import functools
import io
import random
from pathlib import Path

from PIL import Image, ImageDraw

from wirelab.errors import NotFound
from wirelab.http import Request, Router
from wirelab.http.asgi import send_bytes

__all__ = [
    "BLOB_LIMIT",
    "SCRIPT",
    "STYLE",
    "THUMBNAILS",
    "gallery_routes",
    "page",
    "thumbnail",
    "write_site",
]

THUMBNAILS = 100
BLOB_LIMIT = 64 << 20
_PIECE = bytes(range(256)) * 256  # byte i of a blob is i % 256: a client can check what it got
_SIDE = 64
_CACHE = [("cache-control", "no-store")]  # every load goes to the network: that is what is measured

STYLE = b"""body { font-family: system-ui, sans-serif; margin: 1rem; }
#protocol { font-weight: bold; }
.thumbs { display: grid; grid-template-columns: repeat(10, 64px); gap: 4px; }
.thumbs img { width: 64px; height: 64px; image-rendering: pixelated; }
"""

SCRIPT = b"""// Which protocol carried the page and its thumbnails (Resource Timing's nextHopProtocol).
window.addEventListener("load", () => {
  const page = performance.getEntriesByType("navigation")[0];
  const thumbs = performance.getEntriesByType("resource").filter((e) => e.name.includes("/thumbs/"));
  const protocols = [...new Set(thumbs.map((e) => e.nextHopProtocol))].join(", ");
  const loaded = Math.round(page.loadEventStart);
  const report = document.getElementById("protocol");
  report.textContent = `page over ${page.nextHopProtocol}, ${thumbs.length} thumbnails over ${protocols},` +
    ` loaded in ${loaded} ms`;
  report.dataset.page = page.nextHopProtocol;
  report.dataset.thumbs = protocols;
  report.dataset.count = String(thumbs.length);
});
"""


def page() -> bytes:
    images = "\n".join(
        f'<img src="/gallery/thumbs/{n:03d}.png" alt="thumbnail {n}">' for n in range(THUMBNAILS)
    )
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Wirelab gallery</title>
<link rel="stylesheet" href="/gallery/style.css">
<script src="/gallery/app.js" defer></script>
</head>
<body>
<h1>Gallery</h1>
<p id="protocol">loading...</p>
<div class="thumbs">
{images}
</div>
</body>
</html>
""".encode()


@functools.cache
def thumbnail(n: int) -> bytes:
    """Thumbnail `n`: the same bytes for the same n on every machine (a seeded pattern)."""
    rng = random.Random(n)
    image = Image.new("RGB", (_SIDE, _SIDE), _colour(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(24):
        x, y = rng.randrange(_SIDE), rng.randrange(_SIDE)
        size = rng.randrange(4, 24)
        draw.ellipse((x, y, x + size, y + size), fill=_colour(rng))
    for _ in range(_SIDE * 8):  # some grain, so each is a few KiB as a photo's thumbnail would be
        image.putpixel((rng.randrange(_SIDE), rng.randrange(_SIDE)), _colour(rng))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def write_site(root: Path) -> Path:
    """The gallery as static files under `root` (root/gallery/index.html, ...), for a web server of
    another make to serve the very same bytes; returns where the page is."""
    folder = root / "gallery"
    (folder / "thumbs").mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_bytes(page())
    (folder / "style.css").write_bytes(STYLE)
    (folder / "app.js").write_bytes(SCRIPT)
    for n in range(THUMBNAILS):
        (folder / "thumbs" / f"{n:03d}.png").write_bytes(thumbnail(n))
    return folder / "index.html"


def _colour(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def gallery_routes(router: Router) -> None:
    html = page()

    async def gallery(request: Request) -> None:
        await send_bytes(request.send, 200, html, content_type="text/html; charset=utf-8", headers=_CACHE)

    async def style(request: Request) -> None:
        await send_bytes(request.send, 200, STYLE, content_type="text/css; charset=utf-8", headers=_CACHE)

    async def script(request: Request) -> None:
        await send_bytes(
            request.send, 200, SCRIPT, content_type="text/javascript; charset=utf-8", headers=_CACHE
        )

    async def thumb(request: Request, n: str) -> None:
        if not (len(n) == 3 and n.isdigit() and int(n) < THUMBNAILS):
            raise NotFound(f"the gallery has thumbnails 000 to {THUMBNAILS - 1:03d}, not {n!r}")
        await send_bytes(request.send, 200, thumbnail(int(n)), content_type="image/png", headers=_CACHE)

    async def blob(request: Request, size: str) -> None:
        if not (size.isdigit() and int(size) <= BLOB_LIMIT):
            raise NotFound(f"a blob is 0 to {BLOB_LIMIT} bytes, not {size!r}")
        left = int(size)
        head = [(b"content-type", b"application/octet-stream"), (b"content-length", size.encode())]
        await request.send({"type": "http.response.start", "status": 200, "headers": head})
        while left > len(_PIECE):
            await request.send({"type": "http.response.body", "body": _PIECE, "more_body": True})
            left -= len(_PIECE)
        await request.send({"type": "http.response.body", "body": _PIECE[:left]})

    router.http("GET", "/gallery", gallery)
    router.http("GET", "/gallery/style.css", style)
    router.http("GET", "/gallery/app.js", script)
    router.http("GET", "/gallery/thumbs/{n}.png", thumb)
    router.http("GET", "/gallery/blob/{size}", blob)

"""The gallery over a real connection: the page names every resource, and each one is served."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from wirelab.app.gallery import BLOB_LIMIT, SCRIPT, STYLE, THUMBNAILS, page, thumbnail, write_site
from wirelab.testing import ServerProcess


def test_the_page_names_a_stylesheet_a_script_and_every_thumbnail() -> None:
    html = page().decode()
    thumbs = re.findall(r'<img src="(/gallery/thumbs/\d{3}\.png)"', html)
    assert thumbs == [f"/gallery/thumbs/{n:03d}.png" for n in range(THUMBNAILS)]
    assert '<link rel="stylesheet" href="/gallery/style.css">' in html
    assert '<script src="/gallery/app.js" defer></script>' in html


def test_thumbnails_are_a_few_kib_each_and_the_same_on_every_call() -> None:
    sizes = [len(thumbnail(n)) for n in range(THUMBNAILS)]
    assert all(3_000 < size < 8_000 for size in sizes), (min(sizes), max(sizes))
    assert thumbnail(7) == thumbnail(7) and thumbnail(7) != thumbnail(8)
    assert thumbnail(0).startswith(b"\x89PNG\r\n\x1a\n")


def test_written_out_the_site_holds_the_same_bytes(tmp_path: Path) -> None:
    index = write_site(tmp_path)
    assert index.read_bytes() == page()
    assert (tmp_path / "gallery" / "thumbs" / "042.png").read_bytes() == thumbnail(42)
    assert (tmp_path / "gallery" / "style.css").read_bytes() == STYLE
    assert (tmp_path / "gallery" / "app.js").read_bytes() == SCRIPT


def test_every_resource_is_served_uncached(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as client:
        html = client.get("/gallery")
        assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
        assert html.headers["cache-control"] == "no-store"
        for path in re.findall(r'(?:src|href)="(/gallery/[^"]+)"', html.text):
            answer = client.get(path)
            assert answer.status_code == 200, path
        assert client.get("/gallery/thumbs/099.png").content == thumbnail(99)


@pytest.mark.parametrize(
    "path", ["/gallery/thumbs/100.png", "/gallery/thumbs/7.png", "/gallery/thumbs/abc.png"]
)
def test_a_thumbnail_out_of_range_is_a_problem(server: ServerProcess, path: str) -> None:
    answer = httpx.get(f"{server.url}{path}")
    assert answer.status_code == 404
    assert answer.headers["content-type"] == "application/problem+json"


def test_a_blob_is_its_size_in_a_pattern_a_client_can_check(server: ServerProcess) -> None:
    size = 3 * 65536 + 17
    answer = httpx.get(f"{server.url}/gallery/blob/{size}")
    assert answer.status_code == 200 and int(answer.headers["content-length"]) == size
    assert answer.content == bytes(i % 256 for i in range(size))
    assert httpx.get(f"{server.url}/gallery/blob/0").content == b""
    assert httpx.get(f"{server.url}/gallery/blob/{BLOB_LIMIT + 1}").status_code == 404

"""`POST /images` over a real connection: stored whole or not at all, with the right problems."""

from __future__ import annotations

import hashlib
import io
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import wait_done
from wirelab.proto.imagetype import sniff_image_type
from wirelab.testing import ServerProcess


def _png(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 90)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("images"), "--max-image-size", "200000") as server:
        yield server


def _leftovers(server: ServerProcess) -> list[Path]:
    incoming = server.data_dir / "images" / "incoming"
    return list(incoming.iterdir()) if incoming.exists() else []


def test_an_image_is_stored_with_its_sha256(small_server: ServerProcess) -> None:
    body = _png()
    response = httpx.post(f"{small_server.url}/images", content=body, headers={"content-type": "image/png"})
    assert response.status_code == 201
    stored = response.json()
    assert stored["sha256"] == hashlib.sha256(body).hexdigest()
    assert stored["bytes"] == len(body) and stored["media_type"] == "image/png"
    assert response.headers["location"] == f"/images/{stored['id']}"
    assert httpx.get(f"{small_server.url}/images/{stored['id']}").json() == {
        k: v for k, v in stored.items() if k != "job"
    }
    assert (small_server.data_dir / "images" / stored["id"]).read_bytes() == body


def test_streamed_chunked_bodies_are_accepted(small_server: ServerProcess) -> None:
    body = _png(300, 200)

    def chunks() -> object:
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = httpx.post(f"{small_server.url}/images", content=chunks())  # type: ignore[arg-type]
    assert response.status_code == 201 and response.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_too_large_is_413_before_the_body_is_read(small_server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", small_server.port)) as sock:
        sock.sendall(
            b"POST /images HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: 999999999\r\n\r\n"
        )
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")
    assert _leftovers(small_server) == []


def test_a_chunked_body_growing_past_the_limit_is_413_and_leaves_nothing(
    small_server: ServerProcess,
) -> None:
    body = _png() + b"\0" * 300_000

    def chunks() -> object:
        for start in range(0, len(body), 10_000):
            yield body[start : start + 10_000]

    response = httpx.post(f"{small_server.url}/images", content=chunks())  # type: ignore[arg-type]
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert _leftovers(small_server) == []


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"GIF? no, just text", "image/gif"), (_png(), "text/plain"), (b"", "image/png")],
)
def test_what_is_not_an_image_is_415(small_server: ServerProcess, body: bytes, content_type: str) -> None:
    response = httpx.post(
        f"{small_server.url}/images", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 415 and response.json()["status"] == 415
    assert _leftovers(small_server) == []


def test_a_client_gone_mid_body_leaves_no_partial_file(small_server: ServerProcess) -> None:
    before = set((small_server.data_dir / "images").glob("*"))
    with socket.create_connection(("127.0.0.1", small_server.port)) as sock:
        sock.sendall(b"POST /images HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + _png())
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while _leftovers(small_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _leftovers(small_server) == []
    assert set((small_server.data_dir / "images").glob("*")) == before


def test_unknown_or_malformed_image_ids_are_404(small_server: ServerProcess) -> None:
    for image_id in ("0" * 32, "..", "incoming"):
        assert httpx.get(f"{small_server.url}/images/{image_id}").status_code == 404


def test_image_types_are_told_by_their_magic_numbers() -> None:
    assert sniff_image_type(_png()[:12]) == "image/png"
    assert sniff_image_type(b"\xff\xd8\xff\xe0" + b"\0" * 8) == "image/jpeg"
    assert sniff_image_type(b"GIF89a" + b"\0" * 6) == "image/gif"
    assert sniff_image_type(b"RIFF\0\0\0\0WEBP") == "image/webp"
    assert sniff_image_type(b"%PDF-1.7 xxxx") is None


def test_a_multipart_form_gives_its_file_part(small_server: ServerProcess) -> None:
    body = _png(200, 100)
    files = {"image": ("cat.png", body, "image/png")}
    response = httpx.post(
        f"{small_server.url}/images", params={"targets": ""}, data={"title": "a cat"}, files=files
    )
    assert response.status_code == 201, response.text
    stored = response.json()
    assert stored["sha256"] == hashlib.sha256(body).hexdigest() and stored["job"] is None
    assert (small_server.data_dir / "images" / stored["id"]).read_bytes() == body


def test_a_form_without_a_file_is_422_and_a_broken_one_400(small_server: ServerProcess) -> None:
    response = httpx.post(f"{small_server.url}/images", data={"title": "no file"}, files={})
    assert response.status_code in (415, 422)
    form = httpx.post(f"{small_server.url}/images", files={"x": ("a", b"b")}, data={"y": "z"})
    assert form.status_code == 415  # the file is no image
    bare = {"content-type": "multipart/form-data; boundary=xyz"}
    response = httpx.post(f"{small_server.url}/images", content=b"--xyz\r\nnonsense", headers=bare)
    assert response.status_code == 400 and response.headers["content-type"] == "application/problem+json"
    response = httpx.post(
        f"{small_server.url}/images", content=b"x", headers={"content-type": "multipart/form-data"}
    )
    assert response.status_code == 400
    assert _leftovers(small_server) == []


def test_an_uploaded_image_starts_its_job(small_server: ServerProcess) -> None:
    response = httpx.post(f"{small_server.url}/images", params={"targets": "480p"}, content=_png())
    assert response.status_code == 201
    job_id = response.json()["job"]
    assert response.headers["wirelab-job"] == job_id
    job = wait_done(small_server.url, job_id, timeout=30)
    assert job["state"] == "done" and job["params"] == {"image": response.json()["id"], "targets": ["480p"]}


def test_unknown_targets_are_422_before_the_body_is_stored(small_server: ServerProcess) -> None:
    response = httpx.post(f"{small_server.url}/images", params={"targets": "480p,8k"}, content=_png())
    assert response.status_code == 422 and "8k" in response.json()["detail"]

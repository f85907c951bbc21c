"""tus 1.0.0 at /uploads/ over real connections: offsets, resumes, checksums, locks, expiry, joins."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.helpers import wait_done
from wirelab.testing import ServerProcess

TUS = {"tus-resumable": "1.0.0"}
NO_JOB = "targets"


def _image(size: int = 300_000) -> bytes:
    """A JPEG's magic number and noise: what the server takes for an image, of any size."""
    return b"\xff\xd8\xff\xe0" + os.urandom(size - 4)


@pytest.fixture(scope="module")
def tus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("tus"), "--max-image-size", "4000000") as server:
        yield server


def _create(server: ServerProcess, length: int | None, metadata: str = NO_JOB, **headers: str) -> str:
    sizes = {"upload-length": str(length)} if length is not None else {"upload-defer-length": "1"}
    response = httpx.post(
        f"{server.url}/uploads/", headers={**TUS, **sizes, "upload-metadata": metadata, **headers}
    )
    assert response.status_code == 201, response.text
    location: str = response.headers["location"]
    assert location.startswith(f"{server.url}/uploads/")
    return location


def _patch(url: str, offset: int, body: bytes, **headers: str) -> httpx.Response:
    headers = {
        **TUS,
        "content-type": "application/offset+octet-stream",
        "upload-offset": str(offset),
        **headers,
    }
    return httpx.patch(url, content=body, headers=headers)


def _offset(url: str) -> int:
    response = httpx.head(url, headers=TUS)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    return int(response.headers["upload-offset"])


def _stored(server: ServerProcess, url: str) -> bytes:
    image = httpx.get(url).json()["image"]
    data = (server.data_dir / "images" / image["id"]).read_bytes()
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    return data


def _send_part_then_hang_up(url: str, body: bytes, sent: int, **headers: str) -> None:
    """A PATCH announcing all of `body` whose connection dies after `sent` bytes of it."""
    path = "/" + url.split("/", 3)[3]
    head = f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += "Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in {"upload-offset": "0", **headers}.items())
    host, port = url.split("/")[2].split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head.encode() + b"\r\n" + body[:sent])
        time.sleep(0.3)


def test_options_announces_the_protocol(tus: ServerProcess) -> None:
    response = httpx.options(f"{tus.url}/uploads/")
    assert response.status_code == 204
    assert response.headers["tus-version"] == "1.0.0" and response.headers["tus-max-size"] == "4000000"
    assert "concatenation" in response.headers["tus-extension"].split(",")


def test_an_upload_in_chunks_ends_as_the_same_image(tus: ServerProcess) -> None:
    body = _image()
    url = _create(tus, len(body))
    assert _offset(url) == 0
    for start in range(0, len(body), 100_000):
        response = _patch(url, start, body[start : start + 100_000])
        assert response.status_code == 204 and response.headers["tus-resumable"] == "1.0.0"
        assert int(response.headers["upload-offset"]) == min(start + 100_000, len(body))
    assert "upload-expires" in response.headers
    image_id = response.headers["wirelab-image"]
    assert "wirelab-job" not in response.headers
    assert _stored(tus, url) == body and httpx.get(f"{tus.url}/images/{image_id}").status_code == 200
    assert httpx.head(url, headers=TUS).headers["wirelab-image"] == image_id
    assert not (tus.data_dir / "uploads" / url.rsplit("/", 1)[1]).exists()


def test_a_finished_upload_starts_its_image_job(tus: ServerProcess) -> None:
    buffer = io.BytesIO()
    Image.effect_noise((320, 200), 40).convert("RGB").save(buffer, "JPEG")
    body = buffer.getvalue()
    url = _create(tus, len(body), "targets " + base64.b64encode(b"480p").decode())
    response = _patch(url, 0, body)
    job = wait_done(tus.url, response.headers["wirelab-job"], timeout=30)
    assert job["state"] == "done" and [o["name"] for o in job["outputs"]] == ["480p"]
    assert job["params"]["image"] == response.headers["wirelab-image"]
    assert httpx.get(url).json()["job"] == job["id"]


def test_bad_targets_are_refused_before_any_byte(tus: ServerProcess) -> None:
    metadata = "targets " + base64.b64encode(b"8k").decode()
    response = httpx.post(
        f"{tus.url}/uploads/", headers={**TUS, "upload-length": "10", "upload-metadata": metadata}
    )
    assert response.status_code == 422 and response.headers["tus-resumable"] == "1.0.0"


def test_a_wrong_offset_is_409_and_changes_nothing(tus: ServerProcess) -> None:
    body = _image(1000)
    url = _create(tus, len(body))
    assert _patch(url, 0, body[:400]).status_code == 204
    response = _patch(url, 300, body[300:])
    assert response.status_code == 409 and response.headers["upload-offset"] == "400"
    assert response.headers["content-type"] == "application/problem+json"
    assert _offset(url) == 400
    assert _patch(url, 400, body[400:]).status_code == 204
    assert _stored(tus, url) == body


def test_a_client_gone_mid_patch_keeps_what_arrived(tus: ServerProcess) -> None:
    body = _image(2_000_000)
    url = _create(tus, len(body))
    _send_part_then_hang_up(url, body, 700_000)
    offset = _offset(url)
    assert 0 < offset <= 700_000
    assert _patch(url, offset, body[offset:]).status_code == 204
    assert _stored(tus, url) == body


def test_a_client_gone_mid_checksummed_patch_keeps_nothing(tus: ServerProcess) -> None:
    body = _image(2_000_000)
    url = _create(tus, len(body))
    digest = base64.b64encode(hashlib.sha1(body).digest()).decode()
    _send_part_then_hang_up(url, body, 700_000, **{"upload-checksum": f"sha1 {digest}"})
    assert _offset(url) == 0


def test_checksums_are_checked_and_a_mismatch_discards_the_chunk(tus: ServerProcess) -> None:
    body = _image(50_000)
    url = _create(tus, len(body))
    wrong = base64.b64encode(hashlib.md5(b"something else").digest()).decode()
    response = _patch(url, 0, body[:20_000], **{"upload-checksum": f"md5 {wrong}"})
    assert response.status_code == 460 and response.headers["tus-resumable"] == "1.0.0"
    assert _offset(url) == 0
    for algorithm, start, end in (("sha1", 0, 20_000), ("sha256", 20_000, 50_000)):
        digest = base64.b64encode(hashlib.new(algorithm, body[start:end]).digest()).decode()
        assert (
            _patch(url, start, body[start:end], **{"upload-checksum": f"{algorithm} {digest}"}).status_code
            == 204
        )
    assert _stored(tus, url) == body
    response = _patch(_create(tus, 10), 0, b"x" * 10, **{"upload-checksum": "crc32 AAAAAA=="})
    assert response.status_code == 400


def test_two_patches_at_once_one_wins_and_the_file_is_whole(tus: ServerProcess) -> None:
    body = _image(1_000_000)
    url = _create(tus, len(body))
    path = "/" + url.split("/", 3)[3]
    with socket.create_connection(("127.0.0.1", tus.port)) as slow:
        slow.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nTus-Resumable: 1.0.0\r\n"
            "Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n\r\n".encode()
            + body[:1000]
        )
        time.sleep(0.3)
        rival = _patch(url, 0, b"\0" * len(body))
        assert rival.status_code in (409, 423), rival.text
        slow.sendall(body[1000:])
        slow.settimeout(10)
        assert slow.recv(4096).startswith(b"HTTP/1.1 204")
    assert _stored(tus, url) == body


def test_many_racing_patches_never_corrupt(tus: ServerProcess) -> None:
    body = _image(400_000)
    url = _create(tus, len(body))
    statuses: list[int] = []

    def race(fill: bytes) -> None:
        statuses.append(_patch(url, 0, fill).status_code)

    threads = [threading.Thread(target=race, args=(body,)) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses.count(204) >= 1 and set(statuses) <= {204, 409, 423}
    assert _stored(tus, url) == body


def test_creation_with_upload_carries_the_first_bytes(tus: ServerProcess) -> None:
    body = _image(30_000)
    headers = {**TUS, "upload-length": str(len(body)), "content-type": "application/offset+octet-stream"}
    response = httpx.post(
        f"{tus.url}/uploads/", headers={**headers, "upload-metadata": NO_JOB}, content=body[:10_000]
    )
    assert response.status_code == 201 and response.headers["upload-offset"] == "10000"
    url = response.headers["location"]
    assert _patch(url, 10_000, body[10_000:]).status_code == 204
    assert _stored(tus, url) == body


def test_a_deferred_length_is_given_by_a_later_patch(tus: ServerProcess) -> None:
    body = _image(30_000)
    url = _create(tus, None)
    assert httpx.head(url, headers=TUS).headers["upload-defer-length"] == "1"
    assert _patch(url, 0, body[:10_000]).status_code == 204
    response = _patch(url, 10_000, body[10_000:], **{"upload-length": str(len(body))})
    assert response.status_code == 204 and "wirelab-image" in response.headers
    assert _stored(tus, url) == body


def test_termination_removes_the_upload(tus: ServerProcess) -> None:
    url = _create(tus, 100)
    assert _patch(url, 0, _image(50)).status_code == 204
    assert httpx.delete(url, headers=TUS).status_code == 204
    assert httpx.head(url, headers=TUS).status_code == 404
    assert _patch(url, 50, b"x" * 50).status_code == 404
    assert not list((tus.data_dir / "uploads").glob(url.rsplit("/", 1)[1] + "*"))


def test_partial_uploads_join_into_one_final_image(tus: ServerProcess) -> None:
    body = _image(90_000)
    pieces = [body[:30_000], body[30_000:60_000], body[60_000:]]
    parts = [_create(tus, len(p), "", **{"upload-concat": "partial"}) for p in pieces]
    for url, piece in zip(reversed(parts), reversed(pieces), strict=True):
        assert _patch(url, 0, piece[:7_000]).status_code == 204
        assert _patch(url, 7_000, piece[7_000:]).status_code == 204
    assert httpx.head(parts[0], headers=TUS).headers["upload-concat"] == "partial"
    concat = "final;" + " ".join("/uploads/" + p.rsplit("/", 1)[1] for p in parts)
    response = httpx.post(
        f"{tus.url}/uploads/", headers={**TUS, "upload-concat": concat, "upload-metadata": NO_JOB}
    )
    assert response.status_code == 201 and "wirelab-image" in response.headers
    final = response.headers["location"]
    head = httpx.head(final, headers=TUS).headers
    assert head["upload-offset"] == head["upload-length"] == str(len(body))
    assert head["upload-concat"] == concat
    assert _stored(tus, final) == body
    assert all(httpx.head(p, headers=TUS).status_code == 404 for p in parts)
    assert _patch(final, len(body), b"").status_code == 403


def test_a_final_of_unfinished_parts_is_400(tus: ServerProcess) -> None:
    part = _create(tus, 100, "", **{"upload-concat": "partial"})
    concat = "final;/uploads/" + part.rsplit("/", 1)[1]
    response = httpx.post(f"{tus.url}/uploads/", headers={**TUS, "upload-concat": concat})
    assert response.status_code == 400


def test_bytes_that_are_no_image_are_415_and_the_upload_goes(tus: ServerProcess) -> None:
    url = _create(tus, 1000)
    response = _patch(url, 0, b"%PDF-1.7" + b"\0" * 500)
    assert response.status_code == 415 and response.headers["tus-resumable"] == "1.0.0"
    assert httpx.head(url, headers=TUS).status_code == 404


def test_protocol_refusals(tus: ServerProcess) -> None:
    url = _create(tus, 100)
    old = httpx.head(url, headers={"tus-resumable": "0.2.2"})
    assert old.status_code == 412 and old.headers["tus-version"] == "1.0.0"
    assert httpx.post(f"{tus.url}/uploads/", headers={"upload-length": "1"}).status_code == 412
    too_big = httpx.post(f"{tus.url}/uploads/", headers={**TUS, "upload-length": "4000001"})
    assert too_big.status_code == 413 and too_big.json()["status"] == 413
    assert _patch(url, 0, _image(150)).status_code == 413
    assert _patch(url, 0, b"x", **{"content-type": "application/json"}).status_code == 415
    assert httpx.head(f"{tus.url}/uploads/{'f' * 32}", headers=TUS).status_code == 404
    assert httpx.head(f"{tus.url}/uploads/../etc", headers=TUS).status_code == 404


def test_method_override_reaches_patch_and_delete(tus: ServerProcess) -> None:
    body = _image(1000)
    url = _create(tus, len(body))
    headers = {**TUS, "content-type": "application/offset+octet-stream", "upload-offset": "0"}
    response = httpx.post(url, content=body[:500], headers={**headers, "x-http-method-override": "PATCH"})
    assert response.status_code == 204 and _offset(url) == 500
    assert httpx.post(url, headers={**TUS, "x-http-method-override": "DELETE"}).status_code == 204
    assert httpx.post(url, headers=TUS).status_code == 405


def test_uploads_expire_answer_410_and_are_swept(tmp_path: Path) -> None:
    with ServerProcess(tmp_path, "--upload-expiry", "1") as server:
        touched, untouched = _create(server, 1000), _create(server, 1000)
        assert _patch(touched, 0, _image(100)).status_code == 204
        assert "upload-expires" in httpx.head(touched, headers=TUS).headers
        time.sleep(1.2)
        assert httpx.head(touched, headers=TUS).status_code == 410
        assert httpx.head(touched, headers=TUS).status_code == 404
        deadline = time.monotonic() + 5
        while list((tmp_path / "uploads").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list((tmp_path / "uploads").iterdir()) == []
        # swept before anyone asked: its next request still learns it expired, once
        assert httpx.head(untouched, headers=TUS).status_code == 410
        assert httpx.head(untouched, headers=TUS).status_code == 404


def test_a_killed_server_resumes_the_upload_where_its_state_says(tmp_path: Path) -> None:
    body = _image(600_000)
    server = ServerProcess(tmp_path).start()
    try:
        url = _create(server, len(body))
        assert _patch(url, 0, body[:250_000]).status_code == 204
        server.kill()
        server.start()
        assert _offset(url) == 250_000
        assert _patch(url, 250_000, body[250_000:]).status_code == 204
        assert _stored(server, url) == body
    finally:
        server.stop()

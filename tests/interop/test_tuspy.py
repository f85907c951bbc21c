"""PyPI `tuspy` (tusclient), the tus project's Python client, against /uploads/ (tus 1.0.0).

One uploader runs in a child process and is killed part-way, as a crashed client would be; its upload URL
survives in tuspy's own FileStorage, keyed by the file's fingerprint. A new uploader in the test then
finds it there, asks the server for the offset (HEAD) and sends only the rest.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
from tusclient.client import TusClient
from tusclient.storage.filestorage import FileStorage

from tests.interop.interop_peers import JsonLinesPeer
from tests.interop.tus_checks import TUS_HEADERS, image_bytes, stored_image, upload_id
from wirelab.testing import ServerProcess

pytestmark = [
    pytest.mark.interop,
    # tuspy opens the file again for every request and never closes it (BaseUploader.get_file_stream).
    pytest.mark.filterwarnings("ignore:unclosed file:ResourceWarning"),
]

SIZE = 3 << 20
CHUNK = 256 << 10
METADATA = {"filename": "noise.jpg", "filetype": "image/jpeg", "targets": ""}

# The crashing client: it uploads chunk after chunk, reporting each acknowledged offset, and once 40% is
# sent it waits on stdin for the kill that ends it.
CHILD = """
import json, sys
from tusclient.client import TusClient
from tusclient.storage.filestorage import FileStorage

endpoint, path, storage, chunk, metadata = sys.argv[1:]
uploader = TusClient(endpoint).uploader(
    path, chunk_size=int(chunk), metadata=json.loads(metadata),
    store_url=True, url_storage=FileStorage(storage),
)
while uploader.offset < uploader.stop_at:
    uploader.upload_chunk()
    print(json.dumps({"url": uploader.url, "offset": uploader.offset}), flush=True)
    if uploader.offset >= 0.4 * uploader.stop_at:
        sys.stdin.readline()
"""


def test_resume_after_the_client_is_killed(server: ServerProcess, tmp_path: Path) -> None:
    """tus 1.0.0 §"Core Protocol" (HEAD, PATCH): a new client resumes at the server's Upload-Offset,
    neither from 0 nor past what the server holds, and the upload completes intact."""
    source = image_bytes(SIZE, seed=3)
    file, storage = tmp_path / "noise.jpg", tmp_path / "tus-urls.json"
    file.write_bytes(source)
    endpoint = f"{server.url}/uploads/"
    child = JsonLinesPeer(
        [sys.executable, "-c", CHILD, endpoint, str(file), str(storage), str(CHUNK), json.dumps(METADATA)]
    )
    try:
        reports = child.until(lambda r: r["offset"] >= 0.4 * SIZE, timeout=20)
    finally:
        child.process.kill()
        child.close()
    url = reports[-1]["url"]
    upload_id(server, url)
    assert [r["offset"] for r in reports] == [CHUNK * n for n in range(1, len(reports) + 1)]
    held = httpx.head(url, headers=TUS_HEADERS)
    assert held.status_code == 200
    assert int(held.headers["upload-offset"]) == reports[-1]["offset"]

    urls = FileStorage(str(storage))
    try:
        uploader = TusClient(endpoint).uploader(
            str(file), chunk_size=CHUNK, metadata=METADATA, store_url=True, url_storage=urls
        )
        assert uploader.url == url, "tuspy did not find the upload in its storage"
        assert uploader.offset == reports[-1]["offset"], "the resume did not start at the server's offset"
        assert 0 < uploader.offset < SIZE
        uploader.upload()
    finally:
        urls.close()
    assert uploader.offset == SIZE
    assert uploader.request is not None
    image = stored_image(server, url, source)
    assert uploader.request.response_headers["wirelab-image"] == image["id"]


def test_checksum_on_every_chunk(server: ServerProcess, tmp_path: Path) -> None:
    """tus 1.0.0 §"Checksum": every PATCH carries Upload-Checksum: sha1 <base64>, which the server
    verifies; a correct one is accepted, chunk after chunk."""
    source = image_bytes(SIZE, seed=4)
    file = tmp_path / "noise.jpg"
    file.write_bytes(source)
    uploader = TusClient(f"{server.url}/uploads/").uploader(
        str(file), chunk_size=CHUNK, metadata=METADATA, upload_checksum=True
    )
    uploader.upload()
    assert uploader.offset == SIZE
    assert uploader.url is not None
    stored_image(server, uploader.url, source)

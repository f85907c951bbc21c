"""npm `tus-js-client`, the reference tus client, in Node against /uploads/ (tus 1.0.0).

The Node peer (js/tus_upload.mjs) uploads a file with the client's own logic: creation, PATCH chunks,
resuming from its URL storage, termination, and the options that use the other extensions (parallel
uploads joined by concatenation, creation-with-upload, deferred length, X-HTTP-Method-Override). It
reports every request and response it made as JSON lines; the test asserts on those and on what the
server stored.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.helpers import unavailable
from tests.interop.interop_peers import NODE_MODULES, JsonLinesPeer, Record
from tests.interop.tus_checks import TUS_HEADERS, image_bytes, stored_image, upload_id
from wirelab.testing import ServerProcess

pytestmark = pytest.mark.interop

Start = Callable[..., JsonLinesPeer]
SIZE = 3 << 20
CHUNK = 256 << 10
METADATA = {"filename": "noise.jpg", "filetype": "image/jpeg", "targets": ""}


@pytest.fixture
def tus_upload(node_peer: Start, server: ServerProcess, tmp_path: Path) -> Start:
    """Start js/tus_upload.mjs on a file (written to tmp_path) with the given client options."""
    if not (NODE_MODULES / "tus-js-client" / "package.json").exists():
        unavailable("npm package tus-js-client is missing: npm ci --prefix tests/interop")

    def start(source: bytes, **options: object) -> JsonLinesPeer:
        file = tmp_path / "noise.jpg"
        file.write_bytes(source)
        config = {
            "endpoint": f"{server.url}/uploads/",
            "file": str(file),
            "storage": str(tmp_path / "tus-urls.json"),
            "chunkSize": CHUNK,
            "metadata": METADATA,
            **options,
        }
        return node_peer("tus_upload.mjs", json.dumps(config))

    return start


def is_end(run: str) -> Callable[[Record], bool]:
    """The end of a run; on the way, any error, or a PATCH that took none of its chunk, fails at once
    (tus-js-client would send the same chunk again forever)."""

    def done(record: Record) -> bool:
        assert record["type"] != "error", record
        if record["type"] == "response" and verb(record) == "PATCH" and record["status"] == 204:
            assert int(record["upload_offset"]) > int(record["sent_offset"]), f"no progress: {record}"
        return record["type"] in ("success", "aborted") and record["run"] == run

    return done


def verb(record: Record) -> str:
    """The method a request meant: X-HTTP-Method-Override, if it carried one, names it."""
    method: str = record["override"] or record["method"]
    return method


def requests(records: list[Record], method: str) -> list[Record]:
    return [r for r in records if r["type"] == "request" and verb(r) == method]


def responses(records: list[Record], method: str) -> list[Record]:
    return [r for r in records if r["type"] == "response" and verb(r) == method]


def upload_whole(start: Start, source: bytes, *, stream: bool = False, **client: object) -> list[Record]:
    """Every record of one upload of `source`, run to success with these tus-js-client options."""
    return start(source, stream=stream, client=client).until(is_end("first"), timeout=20)


def test_resume_after_abort(tus_upload: Start, server: ServerProcess) -> None:
    """tus 1.0.0 §"Core Protocol": after an interruption the client HEADs the upload URL and PATCHes on
    from the Upload-Offset the server gives; the bytes already accepted are not sent again."""
    source = image_bytes(SIZE, seed=1)
    peer = tus_upload(source, abortAt=0.4)
    first = peer.until(is_end("first"), timeout=20)
    aborted = first[-1]
    url = aborted["url"]
    upload_id(server, url)
    assert [r["status"] for r in responses(first, "POST")] == [201]
    acknowledged = [int(r["upload_offset"]) for r in responses(first, "PATCH") if r["status"] == 204]
    assert acknowledged, "the first run was aborted before any PATCH was answered"
    assert acknowledged == [CHUNK * n for n in range(1, len(acknowledged) + 1)]

    head = httpx.head(url, headers=TUS_HEADERS)
    assert head.status_code == 200
    assert int(head.headers["upload-length"]) == SIZE
    held = int(head.headers["upload-offset"])
    assert acknowledged[-1] <= held < SIZE, "the server lost bytes it acknowledged, or took them all"

    peer.send({"op": "resume"})
    second = peer.until(is_end("resume"), timeout=20)
    assert second[0] == {"type": "previous", "urls": [url]}
    assert [verb(r) for r in second if r["type"] == "request"][:2] == ["HEAD", "PATCH"]
    assert not responses(second, "POST"), "tus-js-client created a new upload instead of resuming"
    (resumed,) = responses(second, "HEAD")
    offset = int(resumed["upload_offset"])
    assert resumed["status"] == 200
    assert held <= offset < SIZE, f"resumed at {offset} of {SIZE}: it started over or skipped"
    assert int(requests(second, "PATCH")[0]["upload_offset"]) == offset
    assert second[-1]["url"] == url

    image = stored_image(server, url, source)
    last = responses(second, "PATCH")[-1]
    assert (last["status"], int(last["upload_offset"])) == (204, SIZE)
    assert last["wirelab_image"] == image["id"], "the completing PATCH must name the stored image"
    peer.send({"op": "close"})


def test_parallel_uploads_concatenate(tus_upload: Start, server: ServerProcess) -> None:
    """tus 1.0.0 §"Concatenation": two partial uploads (Upload-Concat: partial) sent in parallel, then a
    final upload (Upload-Concat: final;URL URL) whose content is the parts in order."""
    source = image_bytes(SIZE, seed=2)
    peer = tus_upload(source, client={"parallelUploads": 2})
    records = peer.until(is_end("first"), timeout=20)
    posts = requests(records, "POST")
    assert [p["upload_concat"] for p in posts[:2]] == ["partial", "partial"]
    assert [int(p["upload_length"]) for p in posts[:2]] == [SIZE // 2, SIZE - SIZE // 2]
    created = responses(records, "POST")
    assert [r["status"] for r in created] == [201, 201, 201]
    parts = [r["location"] for r in created[:2]]
    for part in parts:
        upload_id(server, part)
    final_concat = posts[2]["upload_concat"]
    assert final_concat.startswith("final;")
    assert sorted(final_concat.removeprefix("final;").split(" ")) == sorted(parts)
    assert all(r["status"] == 204 for r in responses(records, "PATCH"))
    assert {r["url"] for r in responses(records, "PATCH")} == set(parts)

    final = created[2]["location"]
    assert final not in parts
    image = stored_image(server, final, source)
    assert created[2]["wirelab_image"] == image["id"], "the final POST completes the upload"
    assert records[-1]["url"] == final
    peer.send({"op": "close"})


def test_creation_with_upload(tus_upload: Start, server: ServerProcess) -> None:
    """tus 1.0.0 §"Creation With Upload": the POST carries the first chunk, and its 201 says the
    Upload-Offset it reached; PATCH requests send the rest from there."""
    source = image_bytes(SIZE, seed=7)
    records = upload_whole(tus_upload, source, uploadDataDuringCreation=True)
    (created,) = responses(records, "POST")
    assert (created["status"], created["upload_offset"]) == (201, str(CHUNK))
    assert int(requests(records, "PATCH")[0]["upload_offset"]) == CHUNK
    image = stored_image(server, created["location"], source)
    assert responses(records, "PATCH")[-1]["wirelab_image"] == image["id"]


def test_deferred_length(tus_upload: Start, server: ServerProcess) -> None:
    """tus 1.0.0 §"Creation" (Upload-Defer-Length): a stream of unknown size is created without a
    length, and the PATCH that reaches its end declares it in Upload-Length."""
    # Not a whole number of chunks: after a last full chunk tus-js-client 4.3 waits for the stream
    # forever (with any server), never sending the empty PATCH that would declare the length.
    source = image_bytes(SIZE + 1000, seed=8)
    records = upload_whole(tus_upload, source, stream=True, uploadLengthDeferred=True)
    (post,) = requests(records, "POST")
    assert post["upload_length"] is None
    lengths = [r["upload_length"] for r in requests(records, "PATCH")]
    assert set(lengths[:-1]) <= {None} and lengths[-1] == str(len(source)), lengths
    image = stored_image(server, records[-1]["url"], source)
    assert responses(records, "PATCH")[-1]["wirelab_image"] == image["id"]


def test_method_override(tus_upload: Start, server: ServerProcess) -> None:
    """tus 1.0.0 §"Core Protocol" (X-HTTP-Method-Override): a client that can only send POST names the
    method in X-HTTP-Method-Override, and the server treats the request as that PATCH."""
    source = image_bytes(SIZE, seed=9)
    records = upload_whole(tus_upload, source, overridePatchMethod=True)
    patches = requests(records, "PATCH")
    assert len(patches) == SIZE // CHUNK
    assert {r["method"] for r in patches} == {"POST"}
    image = stored_image(server, records[-1]["url"], source)
    assert responses(records, "PATCH")[-1]["wirelab_image"] == image["id"]


def test_terminate(tus_upload: Start, server: ServerProcess) -> None:
    """tus 1.0.0 §"Termination": abort(true) sends DELETE, answered 204; the upload and its bytes are
    gone (404 after it), and the client forgets it, so nothing is left to resume."""
    peer = tus_upload(image_bytes(SIZE, seed=10), abortAt=0.4, terminate=True)
    records = peer.until(is_end("first"), timeout=20)
    url = records[-1]["url"]
    (deleted,) = responses(records, "DELETE")
    assert (deleted["url"], deleted["status"]) == (url, 204)
    assert httpx.head(url, headers=TUS_HEADERS).status_code in (404, 410)
    leftovers = list((server.data_dir / "uploads").glob(f"{upload_id(server, url)}*"))
    assert not leftovers, f"terminated, yet on disk: {leftovers}"
    peer.send({"op": "resume"})
    assert peer.next() == {"type": "previous", "urls": []}
    peer.send({"op": "close"})

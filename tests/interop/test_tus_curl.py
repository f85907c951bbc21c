"""curl drives the tus 1.0.0 protocol at /uploads/ by hand, one request per step.

curl is no tus client: each request is written here header by header, so these tests pin the wire of
every step (discovery, creation, offsets, checksums, versions) rather than what a client library
tolerates. The bodies are files on disk sent with --data-binary.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from tests.interop.interop_peers import peer_tool
from tests.interop.tus_checks import image_bytes, stored_image, upload_id
from wirelab.testing import ServerProcess

pytestmark = pytest.mark.interop

MAX = 8 << 20
SIZE = 200 << 10
HALF = SIZE // 2
EXTENSIONS = {
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "checksum",
    "termination",
    "expiration",
    "concatenation",
}
TUS = ("-H", "Tus-Resumable: 1.0.0")
OCTETS = ("-H", "Content-Type: application/offset+octet-stream")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def curl(*args: str, timeout: float = 15.0) -> Reply:
    """Run `curl -sS -i ARGS`; the final response (after any 1xx) comes back parsed."""
    done = subprocess.run(
        [peer_tool("curl"), "-sS", "-i", *args], capture_output=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (done.returncode, done.stderr)
    rest = done.stdout
    while True:
        block, _, rest = rest.partition(b"\r\n\r\n")
        status_line, *lines = block.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        if not 100 <= status < 200:
            break
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(status, headers, rest)


def patch_args(url: str, body: Path, offset: int) -> list[str]:
    """curl's arguments for a PATCH of the file `body` at `offset`."""
    at = f"Upload-Offset: {offset}"
    return ["-X", "PATCH", *TUS, *OCTETS, "-H", at, "--data-binary", f"@{body}", url]


def patch(url: str, body: Path, offset: int, *extra: str) -> Reply:
    return curl(*patch_args(url, body, offset), *extra)


def create(server: ServerProcess, size: int, metadata: str) -> str:
    """POST /uploads/ (tus 1.0.0 §"Creation"); the new upload's URL."""
    length, meta = f"Upload-Length: {size}", f"Upload-Metadata: {metadata}"
    created = curl("-X", "POST", *TUS, "-H", length, "-H", meta, f"{server.url}/uploads/")
    assert created.status == 201, created
    assert created.headers["tus-resumable"] == "1.0.0"
    assert "upload-offset" not in created.headers, "no body was sent, so no offset is due"
    assert parsedate_to_datetime(created.headers["upload-expires"]).tzinfo is not None
    url = created.headers["location"]
    upload_id(server, url)
    return url


def head(url: str) -> Reply:
    reply = curl("-I", *TUS, url)
    assert reply.status == 200, reply
    assert reply.headers["tus-resumable"] == "1.0.0"
    assert reply.headers["cache-control"] == "no-store", "tus 1.0.0 §HEAD: the offset must not be cached"
    return reply


def assert_problem(reply: Reply, status: int) -> None:
    """RFC 9457 §3: the error is a problem+json document carrying its status (and tus's header)."""
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/problem+json"
    assert reply.json()["status"] == status
    assert reply.headers["tus-resumable"] == "1.0.0"


def listed(value: str) -> set[str]:
    return {item.strip() for item in value.split(",")}


def metadata_header(pairs: dict[str, str]) -> str:
    """tus 1.0.0 §Upload-Metadata: `key base64(value)` pairs; an empty value leaves the key alone."""
    encoded = (f"{k} {base64.b64encode(v.encode()).decode()}" if v else k for k, v in pairs.items())
    return ",".join(encoded)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a known Tus-Max-Size."""
    with ServerProcess(tmp_path_factory.mktemp("server"), "--max-image-size", str(MAX)) as process:
        yield process


def test_upload_step_by_step(server: ServerProcess, tmp_path: Path) -> None:
    """tus 1.0.0 §"Core Protocol", §"Creation" and §"Checksum": discover, create, PATCH half, HEAD,
    refuse a wrong offset (409) and a wrong checksum (460) without moving, PATCH the rest."""
    source = image_bytes(SIZE, seed=5)
    first, rest = tmp_path / "first", tmp_path / "rest"
    first.write_bytes(source[:HALF])
    rest.write_bytes(source[HALF:])
    endpoint = f"{server.url}/uploads/"

    options = curl("-X", "OPTIONS", endpoint)
    assert options.status == 204, options
    assert "1.0.0" in listed(options.headers["tus-version"])
    assert listed(options.headers["tus-extension"]) == EXTENSIONS
    assert int(options.headers["tus-max-size"]) == MAX
    assert "sha1" in listed(options.headers["tus-checksum-algorithm"])

    metadata = {"filename": "noise.jpg", "filetype": "image/jpeg", "targets": ""}
    url = create(server, SIZE, metadata_header(metadata))

    fresh = head(url)
    assert fresh.body == b""
    assert (fresh.headers["upload-offset"], fresh.headers["upload-length"]) == ("0", str(SIZE))
    sent = dict(pair.partition(" ")[::2] for pair in fresh.headers["upload-metadata"].split(","))
    assert {k: base64.b64decode(v).decode() for k, v in sent.items()} == metadata

    half = patch(url, first, 0)
    assert half.status == 204, half
    assert half.headers["upload-offset"] == str(HALF)
    assert half.headers["tus-resumable"] == "1.0.0"
    assert head(url).headers["upload-offset"] == str(HALF)

    assert_problem(patch(url, rest, 0), 409)
    wrong = base64.b64encode(hashlib.sha1(b"not these bytes").digest()).decode()
    assert_problem(patch(url, rest, HALF, "-H", f"Upload-Checksum: sha1 {wrong}"), 460)
    assert head(url).headers["upload-offset"] == str(HALF), "the refused chunks must leave no trace"

    right = base64.b64encode(hashlib.sha1(source[HALF:]).digest()).decode()
    done = patch(url, rest, HALF, "-H", f"Upload-Checksum: sha1 {right}")
    assert done.status == 204, done
    assert done.headers["upload-offset"] == str(SIZE)
    image = stored_image(server, url, source)
    assert done.headers["wirelab-image"] == image["id"]
    assert head(url).headers["upload-offset"] == str(SIZE)


@pytest.mark.parametrize("version", ["0.2.2", None])
def test_other_protocol_versions_are_refused(server: ServerProcess, version: str | None) -> None:
    """tus 1.0.0 §Tus-Resumable: a request in a version the server does not support is answered 412
    Precondition Failed, with the versions it does support in Tus-Version."""
    sent = ("-H", f"Tus-Resumable: {version}") if version else ()
    reply = curl("-X", "POST", *sent, "-H", "Upload-Length: 10", f"{server.url}/uploads/")
    assert_problem(reply, 412)
    assert "1.0.0" in listed(reply.headers["tus-version"])


def test_creation_past_the_maximum_size_is_refused(server: ServerProcess) -> None:
    """tus 1.0.0 §"Creation": an Upload-Length over Tus-Max-Size MUST be answered 413."""
    reply = curl("-X", "POST", *TUS, "-H", f"Upload-Length: {MAX + 1}", f"{server.url}/uploads/")
    assert_problem(reply, 413)


def test_a_cut_patch_keeps_what_arrived(server: ServerProcess, tmp_path: Path) -> None:
    """tus 1.0.0 §"Core Protocol": a client resumes from whatever Upload-Offset HEAD reports; the
    contract keeps the bytes that arrived before a client vanished mid-PATCH (curl gives up after 1 s
    at 64 KiB/s), so the upload goes on right after them, not from 0."""
    source = image_bytes(SIZE, seed=6)
    body = tmp_path / "body"
    body.write_bytes(source)
    url = create(server, SIZE, "targets")
    slow = ("--limit-rate", "64K", "--max-time", "1")
    cut = subprocess.run(
        [peer_tool("curl"), "-sS", *patch_args(url, body, 0), *slow],
        capture_output=True,
        timeout=15,
        check=False,
    )
    assert cut.returncode == 28, f"curl was not cut off by --max-time: {cut}"
    deadline = time.monotonic() + 5
    while (held := int(head(url).headers["upload-offset"])) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert 0 < held < SIZE, f"the server holds {held} bytes of the cut PATCH"

    rest = tmp_path / "rest"
    rest.write_bytes(source[held:])
    done = patch(url, rest, held)
    assert done.status == 204, done
    assert done.headers["upload-offset"] == str(SIZE)
    stored_image(server, url, source)

"""schemathesis against a live `wirelab up`: every operation of /openapi.json, fuzzed.

The service is held to its own document: no 5xx, only documented status codes, response bodies,
headers and content types as documented. A failure prints schemathesis's report, each case with a
curl line that reproduces it, and the server's log (where a 500's traceback is, under its id).

The budget is fixed and the seed too, so a run is repeatable and takes well under a minute. Every
operation is tested except `GET /openapi.json`, which schemathesis leaves out on purpose (it serves
the schema itself; test_openapi.py fetches it). Nothing long-lived is excluded, it is bounded:

- long polls hold a request up to `wait` seconds (the service cuts it at 60): each generated
  request waits 0.2 s at most (`[parameters]`), so a poll on a topic that exists still ends at once;
- Server-Sent Events: a stream of logins never ends by itself, and a job's lasts as long as the
  job; schemathesis reads an event stream until `max-stream-events` events or `request-timeout`
  seconds, then checks each complete event against the document, so those are kept short.

Made-up ids only ever find a 404, so some resources are made first (jobs ended and running, one with
outputs, an image, uploads empty, half-written, partial and finished) and half the ids schemathesis
sends, in paths and in image jobs, are theirs (`[dictionaries]`); links in the document lead it from
what it creates to the rest, and GET /whoami carries a valid token, so its 200 is checked too.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import httpx
from PIL import Image

from tests.helpers import create_job, wait_done
from wirelab.testing import ServerProcess

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
    "response_headers_conformance",
)
MAX_EXAMPLES = 20
SEED = 20250101
RUN_TIMEOUT_S = 240

HOOKS = """\
import itertools

import schemathesis

# A tus chunk is bytes, whatever its media type says; send it as such.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")

_fresh = itertools.count()


@schemathesis.hook
def before_call(context, case, kwargs):
    # schemathesis repeats a key across cases, so each later case would be refused (422: another
    # request had the key) before its handler saw it; a valid key is made one request's own.
    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and key.isascii() and key.isprintable() and 0 < len(key) <= 255:
        case.headers["Idempotency-Key"] = f"{next(_fresh)}-{key}"[:255]
"""

CONFIG = """\
hooks = "{hooks}"
request-timeout = 10

[dictionaries]
jobs = {{ values = {jobs} }}
images = {{ values = {images} }}
uploads = {{ values = {uploads} }}

[parameters]
"query.wait" = 0.2
"path.job_id" = {{ dictionary = "jobs", probability = 0.5 }}
"path.image_id" = {{ dictionary = "images", probability = 0.5 }}
"body.image" = {{ dictionary = "images", probability = 0.5 }}
"path.upload_id" = {{ dictionary = "uploads", probability = 0.5 }}

[[operations]]
include-path-regex = "/events$"
request-timeout = 0.5
max-stream-events = 3

[[operations]]
include-path = "/whoami"
headers = {{ Authorization = "Bearer {token}" }}
"""


def test_schemathesis_finds_nothing_against_a_live_server(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "data") as server:
        (tmp_path / "hooks.py").write_text(HOOKS)
        token = httpx.post(f"{server.url}/tokens", json={"user": "schemathesis"}).json()["token"]
        config = tmp_path / "schemathesis.toml"
        ids = {name: json.dumps(values) for name, values in _seed(server.url).items()}
        config.write_text(CONFIG.format(hooks=tmp_path / "hooks.py", token=token, **ids))
        command = [
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "--no-color",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--seed",
            str(SEED),
            "--workers",
            "1",
            "--generation-database",
            "none",
        ]
        result = subprocess.run(
            command, cwd=tmp_path, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, check=False
        )
        report = f"{result.stdout[-20_000:]}\n{result.stderr[-5_000:]}\n--- server log ---\n{server.log()}"
        assert result.returncode == 0, report
        assert "unexpected error" not in server.log(), report


def _seed(url: str) -> dict[str, list[str]]:
    """Ids of resources in every state an operation may find them in."""
    png = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 90)).save(png, "PNG")
    image = httpx.post(f"{url}/images", params={"targets": "480p"}, content=png.getvalue()).json()
    ended = create_job(url, steps=1, step_ms=0)["id"]
    running = create_job(url, steps=100_000, step_ms=100)["id"]
    wait_done(url, image["job"], timeout=30)
    wait_done(url, ended)
    uploads = [
        _upload(url, {"upload-defer-length": "1"}),
        _upload(url, {"upload-length": "1000"}, png.getvalue()[:100]),
        _upload(url, {"upload-length": "10", "upload-concat": "partial"}, b"0123456789"),
        _upload(url, {"upload-length": str(len(png.getvalue()))}, png.getvalue()),
    ]
    return {"jobs": [ended, running, image["job"]], "images": [image["id"]], "uploads": uploads}


def _upload(url: str, headers: dict[str, str], chunk: bytes = b"") -> str:
    """A tus upload that stores its image and starts no job (`targets` empty), `chunk` written."""
    tus = {"tus-resumable": "1.0.0", "upload-metadata": "targets"}
    created = httpx.post(f"{url}/uploads/", headers={**tus, **headers})
    assert created.status_code == 201, created.text
    if chunk:
        patch = {**tus, "upload-offset": "0", "content-type": "application/offset+octet-stream"}
        written = httpx.patch(created.headers["location"], headers=patch, content=chunk)
        assert written.status_code == 204, written.text
    return created.headers["location"].rsplit("/", 1)[-1]

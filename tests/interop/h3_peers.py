"""HTTP/3 peers as the interop tests drive them: libcurl through pycurl (ngtcp2 and nghttp3) and
ngtcp2's own example client (`gtlsclient`, Debian's ngtcp2-client), both independent of aioquic.

A peer that is missing, or a libcurl built without HTTP/3, skips locally and fails in CI.
"""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import unavailable
from tests.interop.interop_peers import peer_tool

__all__ = ["CurlResponse", "blob", "curl_h3", "gtlsclient"]


@dataclass(frozen=True)
class CurlResponse:
    status: int
    http_version: int
    """libcurl's INFO_HTTP_VERSION: pycurl.CURL_HTTP_VERSION_3 when HTTP/3 carried it."""
    headers: str
    body: bytes
    seconds: float


def curl_h3(url: str, *, ca: Path, headers: Sequence[str] = (), timeout_s: float = 30) -> CurlResponse:
    """GET `url` over HTTP/3 only (no fallback to TCP), trusting `ca`."""
    try:
        import pycurl
    except ImportError:
        unavailable("pycurl is not installed (bash .ci/peers.sh installs it)")
    if not pycurl.version_info()[4] & pycurl.VERSION_HTTP3:
        unavailable("pycurl's libcurl was built without HTTP/3")
    body, head = io.BytesIO(), io.BytesIO()
    curl = pycurl.Curl()
    try:
        curl.setopt(pycurl.URL, url)
        curl.setopt(pycurl.HTTP_VERSION, pycurl.CURL_HTTP_VERSION_3ONLY)
        curl.setopt(pycurl.CAINFO, str(ca))
        curl.setopt(pycurl.HTTPHEADER, list(headers))
        curl.setopt(pycurl.WRITEDATA, body)
        curl.setopt(pycurl.HEADERFUNCTION, head.write)
        curl.setopt(pycurl.TIMEOUT_MS, int(timeout_s * 1000))
        started = time.perf_counter()
        curl.perform()
        return CurlResponse(
            curl.getinfo(pycurl.RESPONSE_CODE),
            curl.getinfo(pycurl.INFO_HTTP_VERSION),
            head.getvalue().decode("latin-1"),
            body.getvalue(),
            time.perf_counter() - started,
        )
    finally:
        curl.close()


def gtlsclient(
    port: int, paths: Sequence[str], *, download: Path, options: Sequence[str] = (), timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """ngtcp2's client: every path requested on one QUIC connection to 127.0.0.1:`port`, each body
    saved in `download` under its last path segment; the client exits once every stream closed.
    (ngtcp2-client 0.12 does not verify the server's certificate.)"""
    urls = [f"https://127.0.0.1:{port}{path}" for path in paths]
    command = [
        peer_tool("gtlsclient"),
        "--exit-on-all-streams-close",
        "--no-quic-dump",
        "--no-http-dump",
        f"--download={download}",
        *options,
        "127.0.0.1",
        str(port),
        *urls,
    ]
    return subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=timeout_s)


def blob(size: int) -> bytes:
    """What /gallery/blob/`size` serves: byte i is i % 256."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]

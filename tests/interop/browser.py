"""Headless Chromium as an interop peer: the system's browser driven by Playwright, trusting the lab.

Theory of operation: Playwright only drives the browser; the browser is Debian's /usr/bin/chromium
(never `playwright install`), started afresh for each use with a throwaway profile, and always closed.
Chromium has no flag to trust a CA file, but `--ignore-certificate-errors-spki-list` accepts a
certificate whose public key hash is listed. Our HTTPS listeners send the leaf alone, so the hash that
works is the *leaf's*: the lab CA's hash is refused (ERR_CERT_AUTHORITY_INVALID), as Chromium never
sees the CA in the chain it is given. The hash is taken from the certificate the server really serves.

Chromium's browser-wide flags (Google services, GPU, first run) are turned off so that the only
traffic is the page's, and a test's figures are the server's.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.helpers import unavailable

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

__all__ = ["CHROMIUM", "PageLoad", "load_page", "open_chromium", "served_spki", "spki_hash"]

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 15_000  # a start, a navigation or a wait: seconds here, so a hang fails rather than stalls
QUIET = ("--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run")

# What the page's loads looked like, read in the page once it has loaded (Navigation and Resource
# Timing, and the images themselves), with what the page's own script wrote about it.
_OBSERVE = """() => {
  const report = document.getElementById("protocol");
  return {
    page: performance.getEntriesByType("navigation")[0].nextHopProtocol,
    resources: performance.getEntriesByType("resource").map((e) => [e.name, e.nextHopProtocol]),
    images: document.images.length,
    decoded: [...document.images].filter((img) => img.complete && img.naturalWidth > 0).length,
    report: {text: report.textContent, ...report.dataset},
  };
}"""


@dataclass(frozen=True)
class PageLoad:
    """One page load as the browser saw it: protocols per resource URL, images decoded, the script's
    report (`report["page"]`, `["thumbs"]`, `["count"]` and `["text"]`, as the gallery's SCRIPT sets)."""

    page: str
    resources: dict[str, str]
    images: int
    decoded: int
    report: dict[str, str]


def spki_hash(pem: bytes) -> str:
    """Base64 of SHA-256 over the certificate's SubjectPublicKeyInfo (DER), as Chromium's
    --ignore-certificate-errors-spki-list wants it."""
    key = x509.load_pem_x509_certificate(pem).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def served_spki(host: str, port: int) -> str:
    """The SPKI hash of the leaf the TLS listener at host:port sends (fetched without checking it)."""
    return spki_hash(ssl.get_server_certificate((host, port), timeout=5).encode())


@contextmanager
def open_chromium(*flags: str) -> Iterator[BrowserContext]:
    """A headless Chromium with a fresh profile and `flags` besides the quiet ones; closed on exit."""
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (bash .ci/peers.sh installs chromium)")
    if importlib.util.find_spec("playwright") is None:
        unavailable("playwright (Python) is missing: make .venv/.installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=[*QUIET, *flags],
            timeout=TIMEOUT_MS,
        )
        try:
            context.set_default_timeout(TIMEOUT_MS)
            yield context
        finally:
            context.close()


def load_page(context: BrowserContext, url: str) -> PageLoad:
    """Load `url` to its load event, wait for the page's script to report, and read what happened."""
    page = context.new_page()
    page.goto(url, wait_until="load")
    page.wait_for_function("() => document.getElementById('protocol').dataset.page !== undefined")
    seen: dict[str, Any] = page.evaluate(_OBSERVE)
    return PageLoad(
        page=seen["page"],
        resources=dict(seen["resources"]),
        images=seen["images"],
        decoded=seen["decoded"],
        report=seen["report"],
    )

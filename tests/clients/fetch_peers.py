"""The peers `wirelab fetch` is tested against: a generated gallery site served by nginx (HTTP/1.0,
1.1, pipelining, h2 over TLS and h2c) and by caddy (HTTP/3), each from a temporary configuration on
free loopback ports, with certificates from a CA made for the test."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from tests.helpers import unavailable
from wirelab.net.tls import CertificateAuthority
from wirelab.testing import free_port, free_tcp_and_udp_port

IMAGES = 100
BIG = 16 << 20


@dataclass(frozen=True)
class Gallery:
    root: Path
    ca: Path
    cert: Path
    key: Path

    def digest(self, path: str) -> str:
        return hashlib.sha256((self.root / path.lstrip("/")).read_bytes()).hexdigest()

    @property
    def resources(self) -> list[str]:
        """The page's resources in the page's order."""
        return ["/style.css", "/app.js", *(f"/img/{i:03d}.png" for i in range(IMAGES))]


def make_gallery(workdir: Path) -> Gallery:
    """index.html referencing one CSS, one JS and IMAGES small PNGs (each of another size), and a
    BIG-byte file; a CA and its leaf for localhost and 127.0.0.1."""
    root = workdir / "site"
    (root / "img").mkdir(parents=True)
    for i in range(IMAGES):
        buffer = io.BytesIO()
        Image.new("RGB", (8 + i, 8), (i * 2, 255 - i * 2, 128)).save(buffer, "PNG")
        (root / "img" / f"{i:03d}.png").write_bytes(buffer.getvalue())
    (root / "style.css").write_text("img { width: 32px; height: 32px; }\n")
    (root / "app.js").write_text("document.title = 'gallery';\n")
    images = "\n".join(f'<img src="img/{i:03d}.png" alt="{i}">' for i in range(IMAGES))
    (root / "index.html").write_text(
        '<!doctype html>\n<html><head><link rel="stylesheet" href="/style.css">'
        '<script src="app.js"></script></head>\n'
        f'<body>\n{images}\n<a href="/elsewhere.html">not loaded</a>'
        '<img src="https://example.com/other-origin.png"></body></html>\n'
    )
    (root / "big.bin").write_bytes(os.urandom(BIG))
    ca = CertificateAuthority.load_or_create(workdir / "ca")
    cert, key = ca.issue(["localhost", "127.0.0.1"])
    return Gallery(root, ca.cert_path, cert, key)


@dataclass(frozen=True)
class Nginx:
    gallery: Gallery
    plain_port: int
    tls_port: int
    h2c_port: int
    h1_tls_port: int
    """TLS without HTTP/2: ALPN gives http/1.1."""
    log: Path

    def logged(self, since: int) -> list[list[str]]:
        """The access log's lines after the first `since` bytes: connection, protocol, URI, status."""
        return [line.split() for line in self.log.read_bytes()[since:].decode().splitlines()]

    def log_size(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0


@dataclass(frozen=True)
class Caddy:
    gallery: Gallery
    port: int


def run_nginx(gallery: Gallery, workdir: Path) -> Iterator[Nginx]:
    if shutil.which("nginx") is None:
        unavailable("nginx is not installed (apt-get install nginx)")
    site = Nginx(gallery, free_port(), free_port(), free_port(), free_port(), workdir / "access.log")
    temps = "".join(f"  {kind}_temp_path {workdir}/{kind};\n" for kind in ("client_body", "proxy"))
    serve = f"root {gallery.root};"
    config = workdir / "nginx.conf"
    config.write_text(
        f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/error.log warn;\nevents {{ worker_connections 512; }}\nhttp {{\n"
        "  log_format lab '$connection $server_protocol $request_uri $status';\n"
        f"  access_log {site.log} lab;\n{temps}"
        "  types { text/html html; text/css css; application/javascript js; image/png png; }\n"
        "  default_type application/octet-stream;\n"
        f"  server {{ listen 127.0.0.1:{site.plain_port}; {serve} }}\n"
        f"  server {{ listen 127.0.0.1:{site.h2c_port} http2; {serve} }}\n"
        f"  ssl_certificate {gallery.cert}; ssl_certificate_key {gallery.key};\n"
        "  ssl_protocols TLSv1.2 TLSv1.3;\n"
        f"  server {{ listen 127.0.0.1:{site.tls_port} ssl http2; {serve} }}\n"
        f"  server {{ listen 127.0.0.1:{site.h1_tls_port} ssl; {serve} }}\n}}\n"
    )
    command = ["nginx", "-e", str(workdir / "error.log"), "-p", str(workdir), "-c", str(config)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        for port in (site.plain_port, site.tls_port, site.h2c_port, site.h1_tls_port):
            _wait_tcp(port, process, "nginx")
        yield site
    finally:
        process.terminate()
        process.communicate(timeout=10)


def run_caddy(gallery: Gallery, workdir: Path) -> Iterator[Caddy]:
    """caddy serving the gallery over HTTP/3 (and HTTP/1.1 and 2 on the same TCP port), with our leaf."""
    if shutil.which("caddy") is None:
        unavailable("caddy is not installed (apt-get install caddy)")
    port = free_tcp_and_udp_port()
    config = {
        "admin": {"disabled": True},
        "logging": {"logs": {"default": {"level": "ERROR"}}},
        "storage": {"module": "file_system", "root": str(workdir / "caddy-data")},
        "apps": {
            "http": {
                "servers": {
                    "gallery": {
                        "listen": [f"127.0.0.1:{port}"],
                        "protocols": ["h1", "h2", "h3"],
                        "routes": [{"handle": [{"handler": "file_server", "root": str(gallery.root)}]}],
                        "tls_connection_policies": [{"certificate_selection": {"any_tag": ["lab"]}}],
                        "automatic_https": {"disable": True},
                    }
                }
            },
            "tls": {
                "certificates": {
                    "load_files": [
                        {"certificate": str(gallery.cert), "key": str(gallery.key), "tags": ["lab"]}
                    ]
                }
            },
        },
    }
    path = workdir / "caddy.json"
    path.write_text(json.dumps(config))
    home = workdir / "caddy-home"
    home.mkdir()
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    log = workdir / "caddy.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["caddy", "run", "--config", str(path)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        _wait_tcp(port, process, "caddy", log)
        yield Caddy(gallery, port)
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_tcp(port: int, process: subprocess.Popen[bytes], name: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            said = log.read_text() if log else (process.communicate()[1] or b"").decode()
            raise RuntimeError(f"{name} exited: {said[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on {port}")

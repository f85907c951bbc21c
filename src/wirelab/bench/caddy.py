"""caddy as a bench peer: HTTP/1.1, HTTP/2 and HTTP/3 (quic-go) from one small Caddyfile.

It runs with its admin endpoint and automatic HTTPS off, on a certificate from our CA, with its
home and data directories in the bench's work directory, so nothing of the machine's is used.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["caddy_command", "caddy_config", "caddy_environment"]


def caddy_config(tls_port: int, certificate: tuple[Path, Path], *, site: Path | None = None) -> str:
    """HTTPS on TCP and UDP `tls_port` of 127.0.0.1: `ok` to everything, or the files under `site`
    (with /gallery answered by site/gallery/index.html)."""
    cert, key = certificate
    answer = (
        f"\troot * {site}\n\trewrite /gallery /gallery/index.html\n\tfile_server\n"
        if site is not None
        else '\trespond "ok"\n'
    )
    return (
        "{\n\tadmin off\n\tauto_https off\n\tservers {\n\t\tprotocols h1 h2 h3\n\t}\n}\n"
        f"https://localhost:{tls_port} {{\n\tbind 127.0.0.1\n\ttls {cert} {key}\n{answer}}}\n"
    )


def caddy_command(config: Path) -> list[str]:
    return ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"]


def caddy_environment(workdir: Path) -> dict[str, str]:
    return {"HOME": str(workdir), "XDG_DATA_HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir)}

"""`wirelab bench versions`: one small response over every HTTP version, ours beside nginx and caddy.

Each server answers a two-byte body as fast as it can, over loopback, to a load generator written in
C, so the figures are the server's: wrk for HTTP/1.1 (keep-alive connections), h2load for HTTP/2
(over TLS with ALPN, and h2c), ngtcp2's client (`gtlsclient`, one QUIC connection carrying many
streams, run again and again) for HTTP/3. Per row: requests/s and the server's CPU time per request
(its processes' user+system time over the load, divided by the requests answered).

    wirelab-uvicorn  `wirelab up` as it starts by default: uvicorn, HTTP/1.1 only
    wirelab          `wirelab up --http 1.1,2,3`: hypercorn for HTTP/1.1 and HTTP/2, aioquic for HTTP/3
    nginx            one worker: HTTP/1.1, HTTP/2 over TLS, h2c     (`return 200 "ok"`)
    caddy            HTTP/3 (and HTTP/2 over TLS)                    (`respond "ok"`)

Our servers answer `GET /gallery/blob/2` (the application's smallest streamed answer), the peers a
fixed `ok`: what is compared is what a request costs through each whole stack.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from wirelab.bench.caddy import caddy_command, caddy_config, caddy_environment
from wirelab.bench.lb import run_process
from wirelab.bench.lb_l7 import nginx_command, nginx_temp_paths, parse_wrk
from wirelab.bench.report import Column, print_table, raise_fd_limit, tree_cpu_seconds, write_json
from wirelab.net.tls import CertificateAuthority
from wirelab.testing import ServerProcess, free_port

__all__ = ["COLUMNS", "IMPLS", "VersionsPlan", "missing_peers", "run_versions", "summary"]

IMPLS = ("wirelab-uvicorn", "wirelab", "nginx", "caddy")
_PEERS = {"wrk": "wrk", "h2load": "nghttp2-client", "gtlsclient": "ngtcp2-client"}
_SERVER_PEERS = {"nginx": "nginx", "caddy": "caddy"}
_H2_CONNECTIONS, _H2_STREAMS = 4, 25
_H3_REQUESTS_PER_RUN = 2000
_WRK_CONNECTIONS = 50

COLUMNS = [
    Column("impl", "server"),
    Column("http", "HTTP"),
    Column("transport", "over"),
    Column("req_per_s", "req/s", ",.0f"),
    Column("cpu_us_per_req", "CPU µs/req", ",.1f"),
    Column("ratio_to_peer", "x peer", ".2f"),
    Column("errors", "errors", ",d"),
]


@dataclass(frozen=True)
class VersionsPlan:
    duration_s: int = 5
    impls: tuple[str, ...] = IMPLS


@dataclass(frozen=True)
class _Target:
    """One server as the loads see it."""

    impl: str
    pid: int
    port: int  # HTTP/1.1 in the clear
    h2c_port: int  # HTTP/2 in the clear (nginx serves it on a listener of its own)
    tls_port: int  # HTTP/2 over TLS, HTTP/3 on UDP
    path: str
    loads: tuple[str, ...]


def missing_peers(impls: tuple[str, ...]) -> list[str]:
    needed = {**_PEERS, **{impl: _SERVER_PEERS[impl] for impl in impls if impl in _SERVER_PEERS}}
    return [
        f"{tool} is missing (Debian package {package}; `make peers` installs it)"
        for tool, package in needed.items()
        if shutil.which(tool) is None
    ]


def run_versions(
    plan: VersionsPlan, *, json_path: Path | None, console: Console, progress: Progress
) -> int:
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="wirelab-bench-versions-"))
    rows: list[dict[str, Any]] = []
    try:
        certificate = CertificateAuthority.load_or_create(workdir / "ca").issue(["localhost", "127.0.0.1"])
        with progress:
            task = progress.add_task("measuring", total=len(plan.impls))
            for impl in plan.impls:
                with _server(impl, workdir, certificate) as target:
                    for load in target.loads:
                        progress.update(task, description=f"{impl}: {load}")
                        rows.append(_measure(target, load, plan.duration_s))
                progress.advance(task)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    rows = _with_ratios(rows)
    title = (
        f"One small response over each HTTP version, {plan.duration_s} s per load: wrk "
        f"({_WRK_CONNECTIONS} connections), h2load ({_H2_CONNECTIONS} connections x {_H2_STREAMS} "
        f"streams), gtlsclient (one QUIC connection, {_H3_REQUESTS_PER_RUN} requests a run)"
    )
    print_table(console, title, COLUMNS, rows)
    for line in summary(rows):
        console.print(line)
    if json_path is not None:
        write_json(json_path, "versions", rows, duration_s=plan.duration_s)
    return 1 if any(row["errors"] for row in rows) else 0


_LOADS: dict[str, tuple[str, str]] = {
    # load: (HTTP version, transport)
    "h1": ("1.1", "tcp"),
    "h2-tls": ("2", "tls"),
    "h2c": ("2", "tcp"),
    "h3": ("3", "quic"),
}


def _measure(target: _Target, load: str, duration_s: int) -> dict[str, Any]:
    http, transport = _LOADS[load]
    before = tree_cpu_seconds(target.pid)
    requests, errors, elapsed = _DRIVERS[load](target, duration_s)
    cpu = tree_cpu_seconds(target.pid) - before
    return {
        "impl": target.impl,
        "http": http,
        "transport": transport,
        "req_per_s": requests / elapsed if elapsed else 0.0,
        "cpu_us_per_req": cpu / requests * 1e6 if requests else None,
        "requests": requests,
        "errors": errors,
    }


def _wrk(target: _Target, duration_s: int) -> tuple[int, int, float]:
    url = f"http://127.0.0.1:{target.port}{target.path}"
    command = ["wrk", "-t1", f"-c{_WRK_CONNECTIONS}", f"-d{duration_s}s", url]
    tally = parse_wrk(_run(command, duration_s))
    return round(tally["req_per_s"] * duration_s), int(tally["errors"]), float(duration_s)


def _h2load(url: str, duration_s: int) -> tuple[int, int, float]:
    command = ["h2load", "-D", str(duration_s), "-c", str(_H2_CONNECTIONS), "-m", str(_H2_STREAMS), url]
    out = _run(command, duration_s)
    tally = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if tally is None or codes is None:
        raise RuntimeError(f"h2load printed no tally: {out[-500:]}")
    done, answered = int(tally[1]), int(codes[1])
    return answered, max(0, done - answered), float(duration_s)


def _h2_tls(target: _Target, duration_s: int) -> tuple[int, int, float]:
    return _h2load(f"https://127.0.0.1:{target.tls_port}{target.path}", duration_s)


def _h2c(target: _Target, duration_s: int) -> tuple[int, int, float]:
    return _h2load(f"http://127.0.0.1:{target.h2c_port}{target.path}", duration_s)


def _h3(target: _Target, duration_s: int) -> tuple[int, int, float]:
    """gtlsclient runs of many requests on one connection, again and again until the time is up."""
    url = f"https://localhost:{target.tls_port}{target.path}"
    command = [
        "gtlsclient",
        "--no-quic-dump",
        f"--nstreams={_H3_REQUESTS_PER_RUN}",
        "--exit-on-all-streams-close",
        "127.0.0.1",
        str(target.tls_port),
        url,
    ]
    answered = errors = 0
    start = time.perf_counter()
    while time.perf_counter() - start < duration_s:
        out = _run(command, duration_s)
        ok = out.count("[:status: 200]")
        answered += ok
        errors += _H3_REQUESTS_PER_RUN - ok
    return answered, errors, time.perf_counter() - start


_DRIVERS: dict[str, Callable[[_Target, int], tuple[int, int, float]]] = {
    "h1": _wrk,
    "h2-tls": _h2_tls,
    "h2c": _h2c,
    "h3": _h3,
}


def _run(command: list[str], duration_s: int) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stdout[-500:]}{result.stderr[-500:]}")
    return result.stdout + result.stderr


@contextmanager
def _server(impl: str, workdir: Path, certificate: tuple[Path, Path]) -> Iterator[_Target]:
    port, h2c_port, tls_port = free_port(), free_port(), free_port()
    quiet = ("--log-level", "warning", "--no-pipeline")
    with ExitStack() as stack:
        if impl == "wirelab-uvicorn":
            server = stack.enter_context(ServerProcess(workdir / impl, *quiet, port=port))
            yield _Target(impl, server.pid, port, port, tls_port, "/gallery/blob/2", ("h1",))
        elif impl == "wirelab":
            versions = ("--http", "1.1,2,3", "--tls-port", str(tls_port))
            server = stack.enter_context(ServerProcess(workdir / impl, *quiet, *versions, port=port))
            loads = ("h1", "h2-tls", "h2c", "h3")
            yield _Target(impl, server.pid, port, port, tls_port, "/gallery/blob/2", loads)
        elif impl == "nginx":
            config = workdir / "nginx.conf"
            config.write_text(_nginx_config(port, h2c_port, tls_port, workdir, certificate))
            nginx = run_process(nginx_command(config, workdir), port, workdir / "nginx.log", None)
            pid = stack.enter_context(nginx)
            yield _Target(impl, pid, port, h2c_port, tls_port, "/", ("h1", "h2-tls", "h2c"))
        else:
            config = workdir / "Caddyfile"
            config.write_text(caddy_config(tls_port, certificate))
            caddy = caddy_command(config)
            env = caddy_environment(workdir)
            pid = stack.enter_context(run_process(caddy, tls_port, workdir / "caddy.log", None, env=env))
            yield _Target(impl, pid, port, port, tls_port, "/", ("h2-tls", "h3"))


def _nginx_config(
    port: int, h2c_port: int, tls_port: int, workdir: Path, certificate: tuple[Path, Path]
) -> str:
    """One worker answering `ok`: HTTP/1.1 on `port`, h2c on `h2c_port` (a listener of nginx's speaks
    h2c alone or HTTP/1.1 alone), HTTP/1.1 and HTTP/2 over TLS on `tls_port`."""
    cert, key = certificate
    return (
        f"daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/nginx-error.log warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n    access_log off;\n    keepalive_requests 1000000;\n{nginx_temp_paths(workdir)}"
        f"    server {{\n        listen 127.0.0.1:{port};\n        listen 127.0.0.1:{h2c_port} http2;\n"
        f"        listen 127.0.0.1:{tls_port} ssl http2;\n"
        f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
        '        location / { return 200 "ok"; }\n    }\n}\n'
    )


_PEER_OF = {"1.1": "nginx", "2": "nginx", "3": "caddy"}


def _with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of our rows against the peer's row of the same version and transport (nginx for HTTP/1.1
    and HTTP/2, caddy for HTTP/3), where the run has one."""
    peers = {(r["http"], r["transport"]): r for r in rows if r["impl"] == _PEER_OF[r["http"]]}
    out = []
    for row in rows:
        peer = peers.get((row["http"], row["transport"]))
        ratio = (
            row["req_per_s"] / peer["req_per_s"] if peer and peer["req_per_s"] and peer is not row else None
        )
        out.append({**row, "ratio_to_peer": ratio})
    return out


def summary(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        if row["ratio_to_peer"] is not None:
            peer = _PEER_OF[row["http"]]
            lines.append(
                f"{row['impl']} over HTTP/{row['http']} ({row['transport']}): "
                f"{row['ratio_to_peer']:.2f}x {peer}'s requests/s"
            )
    return lines

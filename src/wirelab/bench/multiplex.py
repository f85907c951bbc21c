"""`wirelab bench multiplex`: the gallery over HTTP/1.1, HTTP/2 and HTTP/3 on a slow, lossy network.

The page (`/gallery`: the HTML, then 102 small resources) is loaded the four ways that matter, all
over TLS, from our server (`wirelab up --http 1.1,2,3`: hypercorn for HTTP/1.1 and HTTP/2, aioquic for
HTTP/3) and from caddy (Go's HTTP/1.1 and HTTP/2, quic-go's HTTP/3) serving the very same files:

    h1.1 x6        HTTP/1.1 on six keep-alive connections, a browser's pool: six requests in flight
    h1.1 pipelined HTTP/1.1 on one connection, every request written at once, answers in order
    h2             HTTP/2, every request a stream of one TCP connection
    h3             HTTP/3, every request a stream of one QUIC connection

The network is a network namespace of our own (`wirelab.net.netns`): every packet is held for half
the round trip on its way in (NFQUEUE, `wirelab.net.nfqueue`), so TCP and QUIC both feel the delay
in their own loss recovery, and a share of packets is dropped by nftables. That is where the
versions part: at 0 % loss, multiplexing saves round trips over a pool of six; with loss, one
missing TCP segment holds back every HTTP/2 stream behind it (head-of-line blocking) while QUIC
holds back only the stream whose data it carried.

Per row: the page time's median and 95th percentile over the loads, bytes on the wire (TLS and QUIC
included), handshakes and connections per load. Needs root (network namespaces).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from wirelab.app.gallery import write_site
from wirelab.bench.caddy import caddy_command, caddy_config, caddy_environment
from wirelab.bench.report import Column, percentile, print_table, write_json
from wirelab.net.netns import Namespace, lossy_namespace
from wirelab.net.nfqueue import delay_packets
from wirelab.net.tls import CertificateAuthority
from wirelab.proto.impair import Impairment

__all__ = ["COLUMNS", "MODES", "SERVERS", "Mode", "MultiplexPlan", "run_multiplex", "summary"]


@dataclass(frozen=True)
class Mode:
    name: str
    http: str
    connections: int
    pipeline: bool = False


MODES = (
    Mode("h1.1 x6", "1.1", 6),
    Mode("h1.1 pipelined", "1.1", 1, pipeline=True),
    Mode("h2", "2", 1),
    Mode("h3", "3", 1),
)
SERVERS = ("wirelab", "caddy")
_PORT, _TLS_PORT = 8080, 8443  # inside the namespace, where nothing else listens

COLUMNS = [
    Column("server", "server"),
    Column("mode", "client"),
    Column("loss_pct", "loss %", ".0f"),
    Column("rtt_ms", "RTT ms", ".0f"),
    Column("connections", "conns", ",d"),
    Column("page_ms_p50", "page p50 ms", ",.0f"),
    Column("page_ms_p95", "page p95 ms", ",.0f"),
    Column("bytes_on_wire", "bytes on wire", ",d"),
    Column("handshakes", "handshakes", ",d"),
    Column("failures", "failed", ",d"),
]


@dataclass(frozen=True)
class MultiplexPlan:
    losses_pct: tuple[float, ...] = (0.0, 1.0, 3.0)
    rtt_ms: float = 50.0
    repeat: int = 10
    modes: tuple[str, ...] = tuple(mode.name for mode in MODES)
    servers: tuple[str, ...] = SERVERS
    timeout_s: float = 60.0


def run_multiplex(
    plan: MultiplexPlan, *, json_path: Path | None, console: Console, progress: Progress
) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="wirelab-bench-multiplex-"))
    modes = [mode for mode in MODES if mode.name in plan.modes]
    rows: list[dict[str, Any]] = []
    one_way = Impairment(delay_s=plan.rtt_ms / 2000)
    try:
        with progress, lossy_namespace() as namespace, delay_packets(namespace, up=one_way, down=one_way):
            total = len(plan.servers) * len(modes) * len(plan.losses_pct)
            task = progress.add_task("measuring", total=total)
            for server in plan.servers:
                namespace.set_loss(0)
                with _server(server, namespace, workdir / server):
                    for loss in plan.losses_pct:
                        namespace.set_loss(loss / 100)
                        for mode in modes:
                            progress.update(task, description=f"{server}: {mode.name} at {loss:g} % loss")
                            row = _measure(namespace, workdir / server, mode, loss, plan)
                            rows.append({"server": server, **row})
                            progress.advance(task)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    title = (
        f"The gallery (1 page + 102 resources) over each HTTP version, {plan.repeat} loads per row, "
        f"{plan.rtt_ms:g} ms round trip (packets held in the kernel), loss dropped by nftables"
    )
    print_table(console, title, COLUMNS, rows)
    for line in summary(rows):
        console.print(line)
    if json_path is not None:
        write_json(json_path, "multiplex", rows, rtt_ms=plan.rtt_ms, repeat=plan.repeat)
    return 1 if any(row["failures"] for row in rows) else 0


@contextmanager
def _server(server: str, namespace: Namespace, workdir: Path) -> Iterator[None]:
    """`server` listening in `namespace`; its CA's certificate ends up in workdir/ca/ca.pem."""
    workdir.mkdir(parents=True)
    env = None
    if server == "caddy":
        certificate = CertificateAuthority.load_or_create(workdir / "ca").issue(["localhost", "127.0.0.1"])
        write_site(workdir / "site")
        config = workdir / "Caddyfile"
        config.write_text(caddy_config(_TLS_PORT, certificate, site=workdir / "site"))
        command = namespace.argv(*caddy_command(config))
        env = {**os.environ, **caddy_environment(workdir)}
    else:
        command = namespace.argv(
            sys.executable,
            "-m",
            "wirelab",
            "up",
            "--http",
            "1.1,2,3",
            "--port",
            str(_PORT),
            "--tls-port",
            str(_TLS_PORT),
            "--data-dir",
            str(workdir),
            "--no-pipeline",
            "--no-access-log",
            "--log-level",
            "warning",
        )
    with (workdir / "server.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _measure(
    namespace: Namespace, workdir: Path, mode: Mode, loss_pct: float, plan: MultiplexPlan
) -> dict[str, Any]:
    command = namespace.argv(
        sys.executable,
        "-m",
        "wirelab.bench.page_loads",
        f"https://localhost:{_TLS_PORT}/gallery",
        "--http",
        mode.http,
        "--connections",
        str(mode.connections),
        "--repeat",
        str(plan.repeat),
        "--cafile",
        str(workdir / "ca" / "ca.pem"),
        "--timeout",
        str(plan.timeout_s),
        *(["--pipeline"] if mode.pipeline else []),
    )
    timeout = plan.repeat * plan.timeout_s + 60
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        server_log = (workdir / "server.log").read_text(errors="replace")[-1000:]
        raise RuntimeError(f"the page loads failed: {result.stderr[-1500:]}\nserver: {server_log}")
    loads = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    good = [load for load in loads if "error" not in load and load["ok"]]
    times = [load["page_ms"] for load in good]
    return {
        "mode": mode.name,
        "http": mode.http,
        "loss_pct": loss_pct,
        "rtt_ms": plan.rtt_ms,
        "connections": _median_int(good, "connections"),
        "page_ms_p50": statistics.median(times) if times else None,
        "page_ms_p95": percentile(times, 95) if times else None,
        "bytes_on_wire": _median_int(good, "bytes_on_wire"),
        "handshakes": _median_int(good, "handshakes"),
        "loads": len(good),
        "failures": len(loads) - len(good) + plan.repeat - len(loads),
        "errors": sorted({load["error"] for load in loads if "error" in load}),
    }


def _median_int(loads: list[dict[str, Any]], key: str) -> int:
    return round(statistics.median(load[key] for load in loads)) if loads else 0


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The two goals: at 0 % loss, h2 within 0.8x the pool of six's page time; at 3 % loss, h3 within
    0.7x h2's (head-of-line blocking shown). Said met or missed, with the ratio measured."""
    p50 = {(row["server"], row["mode"], row["loss_pct"]): row["page_ms_p50"] for row in rows}
    lines = []
    for server in dict.fromkeys(row["server"] for row in rows):
        for fast, slow, loss, goal in (("h2", "h1.1 x6", 0.0, 0.8), ("h3", "h2", 3.0, 0.7)):
            a, b = p50.get((server, fast, loss)), p50.get((server, slow, loss))
            if a and b:
                ratio = a / b
                verdict = "met" if ratio <= goal else "missed"
                lines.append(
                    f"{server}: at {loss:g} % loss, {fast}'s page time is {ratio:.2f}x {slow}'s "
                    f"(median {a:,.0f} ms vs {b:,.0f} ms; goal <= {goal}x: {verdict})"
                )
    return lines

"""`wirelab bench sidecar`: wrk straight to nginx over HTTP/1.1, beside wrk through `wirelab sidecar`
to the same nginx over one HTTP/2 connection.

Theory of operation: one nginx (`worker_processes 1`, `return 200 "ok"`) listens twice, for HTTP/1.1
and for h2c, and logs each request's `$connection` per listener, so the number of upstream TCP
connections a row used is counted from its log rather than assumed. Each row is one wrk run (keep-
alive connections, two threads, `--latency`):

    direct-h1   wrk -> nginx (HTTP/1.1): every client connection is an upstream connection
    sidecar-h2  wrk -> `python -m wirelab sidecar` (HTTP/1.1) -> nginx (HTTP/2, one connection)

The sidecar runs as users run it, logging one line per request (to a file here). Its CPU share is
measured meanwhile: at ~100% the sidecar's single event loop is what limits its row, and its cost
per request says what the multiplexing, tracing and retries cost.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from wirelab.bench.lb import run_process
from wirelab.bench.lb_l7 import nginx_command, nginx_temp_paths, parse_wrk, run_load
from wirelab.bench.report import Column, cpu_seconds, print_table, write_json
from wirelab.testing import free_port

__all__ = ["IMPLS", "SidecarPlan", "missing_peers", "nginx_config", "run_sidecar"]

IMPLS = ("direct-h1", "sidecar-h2")
COLUMNS = (
    Column("impl", "impl"),
    Column("req_per_s", "req/s", ",.0f"),
    Column("req_per_s_vs_direct", "x direct", ".2f"),
    Column("latency_p50_ms", "p50 ms", ".2f"),
    Column("latency_p99_ms", "p99 ms", ".2f"),
    Column("upstream_connections", "upstream TCP conns", ","),
    Column("sidecar_cpu_pct", "sidecar CPU %", ".0f"),
    Column("sidecar_cpu_us_per_req", "sidecar CPU µs/req", ",.0f"),
    Column("errors", "errors", ","),
)


@dataclass(frozen=True, slots=True)
class SidecarPlan:
    duration_s: int = 5
    connections: int = 50
    threads: int = 2


def missing_peers() -> list[str]:
    return [
        f"{tool} not found on PATH: install Debian's {tool} (apt-get install {tool})"
        for tool in ("nginx", "wrk")
        if shutil.which(tool) is None
    ]


def nginx_config(h1_port: int, h2_port: int, workdir: Path) -> str:
    """One worker answering `ok` over HTTP/1.1 on `h1_port` and h2c on `h2_port`, each listener
    logging the connection number of every request to its own file in `workdir`."""
    temps = nginx_temp_paths(workdir)
    servers = "".join(
        f"    server {{\n        listen 127.0.0.1:{port}{flag};\n"
        f"        access_log {workdir}/{name}.log conn;\n"
        '        location / { return 200 "ok"; }\n    }\n'
        for name, port, flag in (("h1", h1_port, ""), ("h2", h2_port, " http2"))
    )
    return (
        f"daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/nginx-error.log warn;\nevents {{ worker_connections 4096; }}\n"
        f"http {{\n    log_format conn '$connection';\n    keepalive_requests 10000000;\n"
        f"{temps}{servers}}}\n"
    )


def _wrk(port: int, plan: SidecarPlan) -> dict[str, float]:
    command = ["wrk", f"-t{plan.threads}", f"-c{plan.connections}", f"-d{plan.duration_s}s", "--latency"]
    return parse_wrk(run_load(command, port, plan.duration_s))


def _connections(log: Path) -> int:
    """Distinct connection numbers in an access log, which is then emptied for the next row."""
    numbers = set(log.read_text().split()) if log.exists() else set()
    log.write_text("")
    return len(numbers)


@dataclass(frozen=True, slots=True)
class _Lab:
    plan: SidecarPlan
    workdir: Path
    h1_port: int
    h2_port: int

    def measure(self, impl: str) -> dict[str, Any]:
        if impl == "direct-h1":
            row = _wrk(self.h1_port, self.plan)
            return {"impl": impl, **row, "upstream_connections": _connections(self.workdir / "h1.log")}
        with self._sidecar() as (port, pid):
            cpu, started = cpu_seconds(pid), time.perf_counter()
            row = _wrk(port, self.plan)
            busy = 100 * (cpu_seconds(pid) - cpu) / (time.perf_counter() - started)
        connections = _connections(self.workdir / "h2.log")
        cost = busy / 100 / row["req_per_s"] * 1e6 if row["req_per_s"] else None
        return {
            "impl": impl,
            **row,
            "upstream_connections": connections,
            "sidecar_cpu_pct": busy,
            "sidecar_cpu_us_per_req": cost,
        }

    @contextlib.contextmanager
    def _sidecar(self) -> Iterator[tuple[int, int]]:
        port = free_port()
        command = [sys.executable, "-m", "wirelab", "sidecar", "--listen", f"127.0.0.1:{port}"]
        command += ["--upstream", f"http://127.0.0.1:{self.h2_port}"]
        with run_process(command, port, self.workdir / "sidecar.log", None) as pid:
            yield port, pid


def run_sidecar(plan: SidecarPlan, *, json_path: Path | None, console: Console, progress: Progress) -> int:
    """Measure both rows, print the table; exit status 1 if a row had errors or no figure."""
    workdir = Path(tempfile.mkdtemp(prefix="wirelab-bench-sidecar-"))
    lab = _Lab(plan, workdir, free_port(), free_port())
    config = workdir / "nginx.conf"
    config.write_text(nginx_config(lab.h1_port, lab.h2_port, workdir))
    rows: list[dict[str, Any]] = []
    try:
        with (
            progress,
            run_process(nginx_command(config, workdir), lab.h2_port, workdir / "nginx.log", None),
        ):
            task = progress.add_task("measuring", total=len(IMPLS))
            for impl in IMPLS:
                progress.update(task, description=f"{impl}: wrk for {plan.duration_s} s")
                rows.append(lab.measure(impl))
                progress.advance(task)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    direct = rows[0]["req_per_s"]
    for row in rows:
        row["req_per_s_vs_direct"] = row["req_per_s"] / direct if direct else None
    title = (
        f"Sidecar: wrk -t{plan.threads} -c{plan.connections} (keep-alive, HTTP/1.1) for "
        f"{plan.duration_s} s to nginx answering `ok`, straight or through `wirelab sidecar` (HTTP/2)"
    )
    print_table(console, title, COLUMNS, rows)
    if json_path is not None:
        plan_json = {
            "duration_s": plan.duration_s,
            "connections": plan.connections,
            "threads": plan.threads,
        }
        write_json(json_path, "sidecar", rows, plan=plan_json)
    return 1 if any(row["errors"] or not row["req_per_s"] for row in rows) else 0

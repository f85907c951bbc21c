"""`wirelab bench slowloris`: thousands of connections trickling request heads at `wirelab up`, beside
nginx under the same flood with the same head deadline.

Theory of operation: a slow-loris client opens a connection, sends half a request head and then one
header line now and then, so that it never finishes and never goes idle. Without a deadline on the
whole head, each such client holds a connection (a file descriptor, a buffer) for as long as it
likes, and a few thousand exhaust a server. With one, the server closes them at the deadline.

Each row floods one server with `connections` trickling clients (a header line every `trickle_s`),
while a probe sends an ordinary `GET /healthz` on a new connection every `probe_interval_s`. It
reports how many slow connections the server closed (counted from the client side: an EOF, a reset,
or a 408), when the last one was closed after the flood began, the probe's latency p50/p99 during
the flood and its failures, and the server's peak RSS. nginx runs with `client_header_timeout` set
to the same deadline, one worker, answering `ok`. The `wirelab-no-deadline` row gives `wirelab up`
an hour instead, to show what the deadline buys: nothing is cut, and the connections stay held.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.progress import Progress

from wirelab.bench.lb import run_process
from wirelab.bench.lb_l7 import nginx_command, nginx_temp_paths
from wirelab.bench.report import Column, percentile, print_table, raise_fd_limit, write_json
from wirelab.testing import ServerProcess, free_port

__all__ = ["IMPLS", "Flood", "SlowlorisPlan", "flood", "missing_peers", "run_slowloris"]

IMPLS = ("wirelab", "nginx", "wirelab-no-deadline")
COLUMNS = (
    Column("impl", "impl"),
    Column("slow_connections", "slow conns", ","),
    Column("cut", "cut by server", ","),
    Column("last_cut_s", "last cut s", ".1f"),
    Column("probe_p50_ms", "probe p50 ms", ".2f"),
    Column("probe_p99_ms", "probe p99 ms", ".2f"),
    Column("probes", "probes", ","),
    Column("probe_failures", "probe failures", ","),
    Column("rss_peak_mib", "peak RSS MiB", ".1f"),
)
DEFENDED = ("wirelab", "nginx")
"""Rows whose server has the deadline; `wirelab-no-deadline` (an hour) shows what it buys."""
_OPEN_BATCH = 250


@dataclass(frozen=True, slots=True)
class SlowlorisPlan:
    connections: int = 3000
    header_timeout_s: float = 5.0
    trickle_s: float = 1.0
    probe_interval_s: float = 0.01


@dataclass(slots=True)
class Flood:
    """What the clients saw: when each slow connection was closed, and the probe's latencies."""

    started: float
    cut_at: list[float] = field(default_factory=list)
    probe_s: list[float] = field(default_factory=list)
    probe_failures: int = 0

    def row(self, slow_connections: int) -> dict[str, Any]:
        p50, p99 = (percentile(self.probe_s, q) for q in (50, 99))
        return {
            "slow_connections": slow_connections,
            "cut": len(self.cut_at),
            "last_cut_s": max(self.cut_at) - self.started if self.cut_at else None,
            "probe_p50_ms": p50 * 1000 if p50 is not None else None,
            "probe_p99_ms": p99 * 1000 if p99 is not None else None,
            "probes": len(self.probe_s),
            "probe_failures": self.probe_failures,
        }


async def _trickle(port: int, plan: SlowlorisPlan, result: Flood, stop: asyncio.Event) -> None:
    """Half a request head, then a header line every `trickle_s`, until the server closes."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return  # never connected: not a connection the server held
    cut = False
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: bench\r\n")
        line = 0
        while not stop.is_set() and not cut:
            try:
                data = await asyncio.wait_for(reader.read(65536), timeout=plan.trickle_s)
            except TimeoutError:
                writer.write(b"X-Trickle-%d: 1\r\n" % line)
                line += 1
            else:
                cut = not data or b" 408 " in data
    except OSError:
        cut = True
    finally:
        writer.close()
    if cut:
        result.cut_at.append(time.monotonic())


def _probe_once(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        answer = sock.recv(65536)
        if not answer.startswith(b"HTTP/1.1 200"):
            raise OSError(f"answered {answer[:40]!r}")


def _probe(port: int, plan: SlowlorisPlan, result: Flood, stop: threading.Event) -> None:
    """An ordinary client, in a thread of its own so the flood's event loop does not delay it."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            _probe_once(port)
        except OSError:
            result.probe_failures += 1
        else:
            result.probe_s.append(time.perf_counter() - started)
        stop.wait(plan.probe_interval_s)


async def flood(port: int, plan: SlowlorisPlan) -> Flood:
    """Flood the server on `port` and probe it until every slow connection is closed, or until
    three deadlines and five seconds have passed (a server without a deadline never closes them)."""
    stop, stop_probe = asyncio.Event(), threading.Event()
    result = Flood(started=time.monotonic())
    probe = threading.Thread(target=_probe, args=(port, plan, result, stop_probe))
    probe.start()
    slow: list[asyncio.Task[None]] = []
    try:
        for start in range(0, plan.connections, _OPEN_BATCH):
            count = min(_OPEN_BATCH, plan.connections - start)
            slow += [asyncio.create_task(_trickle(port, plan, result, stop)) for _ in range(count)]
            await asyncio.sleep(0.05)  # a batch at a time, so the listen backlog never overflows
        await asyncio.wait(slow, timeout=3 * plan.header_timeout_s + 5)
    finally:
        stop.set()
        stop_probe.set()
        await asyncio.gather(*slow, return_exceptions=True)
        await asyncio.to_thread(probe.join)
    return result


def missing_peers() -> list[str]:
    if shutil.which("nginx") is None:
        return ["nginx not found on PATH: install Debian's nginx (apt-get install nginx)"]
    return []


def nginx_config(port: int, plan: SlowlorisPlan, workdir: Path) -> str:
    temps = nginx_temp_paths(workdir)
    deadline_ms = round(plan.header_timeout_s * 1000)  # nginx takes whole units only
    return (
        f"daemon off;\nworker_processes 1;\nworker_rlimit_nofile 65536;\npid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/nginx-error.log crit;\nevents {{ worker_connections 20000; }}\n"
        f"http {{\n    access_log off;\n    client_header_timeout {deadline_ms}ms;\n{temps}"
        f"    server {{\n        listen 127.0.0.1:{port} backlog=4096;\n"
        '        location / { return 200 "ok"; }\n    }\n}\n'
    )


def _tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    return sum(int(p.memory_info().rss) for p in [process, *process.children(recursive=True)])


def _measure(port: int, pid: int, plan: SlowlorisPlan) -> dict[str, Any]:
    peak = 0

    async def main() -> Flood:
        nonlocal peak
        task = asyncio.create_task(flood(port, plan))
        while not task.done():
            peak = max(peak, _tree_rss(pid))
            await asyncio.sleep(0.2)
        return await task

    result = asyncio.run(main())
    return {**result.row(plan.connections), "rss_peak_mib": peak / (1 << 20)}


@contextlib.contextmanager
def _server(impl: str, plan: SlowlorisPlan, workdir: Path) -> Iterator[tuple[int, int]]:
    if impl.startswith("wirelab"):
        deadline = plan.header_timeout_s if impl == "wirelab" else 3600
        args = ("--header-timeout", str(deadline), "--log-level", "warning")
        with ServerProcess(workdir / "wirelab", *args) as server:
            yield server.port, server.pid
        return
    port = free_port()
    config = workdir / "nginx.conf"
    config.write_text(nginx_config(port, plan, workdir))
    with run_process(nginx_command(config, workdir), port, workdir / "nginx.log", None) as pid:
        yield port, pid


def run_slowloris(
    plan: SlowlorisPlan,
    impls: tuple[str, ...],
    *,
    json_path: Path | None,
    console: Console,
    progress: Progress,
) -> int:
    """Measure each server under the flood, print the table; exit 1 if a server left slow
    connections open or failed a probe."""
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="wirelab-bench-slowloris-"))
    rows: list[dict[str, Any]] = []
    try:
        with progress:
            task = progress.add_task("measuring", total=len(impls))
            for impl in impls:
                progress.update(task, description=f"{impl}: {plan.connections:,} slow connections")
                with _server(impl, plan, workdir) as (port, pid):
                    rows.append({"impl": impl, **_measure(port, pid, plan)})
                progress.advance(task)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    title = (
        f"Slow loris: {plan.connections:,} connections each sending a header line every "
        f"{plan.trickle_s} s, head deadline {plan.header_timeout_s} s; a probe GET every "
        f"{plan.probe_interval_s * 1000:.0f} ms on a new connection"
    )
    print_table(console, title, COLUMNS, rows)
    if json_path is not None:
        write_json(json_path, "slowloris", rows, plan=dataclasses.asdict(plan))
    failed = any(
        row["probe_failures"] or (row["cut"] < row["slow_connections"] and row["impl"] in DEFENDED)
        for row in rows
    )
    return 1 if failed else 0

"""`wirelab bench lb`: our layer 4 and layer 7 balancers beside HAProxy, with the same backends and
the same load.

Theory of operation: per implementation, the bench starts a balancer in front of one backend, drives
it, and stops it; `direct` skips the balancer and is the ceiling that the backends and clients allow.

    wirelab-splice  layer 4: `python -m wirelab lb l4 --splice` (zero-copy through a pipe);
                    layer 7: `python -m wirelab lb l7`, which has one data path, so its figures sit
                    on this row and the wirelab-copy row has none
    wirelab-copy    layer 4 only: `python -m wirelab lb l4 --copy` (recv/send through user space)
    haproxy         Debian's haproxy written by `haproxy_config`: `mode tcp` for layer 4, `mode http`
                    with keep-alive on both sides and `http-reuse always` for layer 7; roundrobin, no
                    health checks, one thread, the same connect/idle timeouts and connection limit
    direct          straight to the backend

Four loads, each for `duration_s`:

    bulk            iperf3 through the balancer to one iperf3 server (one backend, since iperf3's
                    control and data connections must reach the same server): received Gbit/s
    new conns       an epoll client keeping IN_FLIGHT connections open at a time, each one connect,
                    one byte out, its echo back, close, against a tiny echo backend: connections/s
    L7 maximum      wrk (one thread, keep-alive) to nginx answering `ok` (wirelab.bench.lb_l7):
                    requests/s
    L7 latency      after every maximum is known, requests paced at PACE_SHARE of the least
                    balancer maximum (below both ours and HAProxy's), timed from their scheduled
                    instants: p50 and p99 in ms, and in the summary what each adds over direct

and, on the rows of our balancer and HAProxy, the same wrk load in three more ways: through the
balancer to an HTTP/2 backend (h2c) and from h2load's HTTP/2 clients; relayed at layer 4 instead
(`wirelab lb l4 --copy`, HAProxy `mode tcp`), the same bytes with no HTTP work at all, which is what
the balancer's machinery costs before any HTTP; and, for ours, with `--parser python` (the lab's
own HTTP/1.1 parser instead of llhttp), which shows what parsing costs, and with its protocol
modules interpreted instead of compiled (WIRELAB_PURE_PYTHON, see `wirelab._compiled`), which shows
what compiling them gains.

Beside each figure, the share of a core the balancer used meanwhile (from its CPU time): a balancer
under 100% was held back by the load, not by itself, which `direct` then shows.

With two cores or more, the balancer (ours or HAProxy) runs alone on the last core and everything
else (the bench's clients, wrk, iperf3 and the backends, nginx included) on the others, so a
balancer never competes with its load for a CPU; the output says which cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import psutil
from rich.console import Console
from rich.progress import Progress, TaskID

from wirelab._compiled import PURE_PYTHON_ENV, compiled
from wirelab.bench.lb_l7 import (
    WRK_CONNECTIONS,
    h2load_req_per_s,
    nginx_command,
    nginx_config,
    paced_latency_ms,
    wrk_req_per_s,
)
from wirelab.bench.report import Column, cpu_seconds, print_table, raise_fd_limit, write_json
from wirelab.net.loop import runner
from wirelab.testing import free_port

__all__ = [
    "GOALS",
    "H2_IMPLS",
    "IMPLS",
    "L7_IMPLS",
    "ConnTally",
    "LbPlan",
    "Pinning",
    "haproxy_config",
    "iperf3_gbit_per_s",
    "measure_conn_rate",
    "missing_peers",
    "run_lb",
    "run_process",
    "serve_echo",
    "summary",
]

IMPLS = ("wirelab-splice", "wirelab-copy", "haproxy", "direct")
L7_IMPLS = ("wirelab-splice", "haproxy", "direct")
"""The rows with layer 7 figures: `wirelab lb l7` has one data path, reported on wirelab-splice's row."""
PEER = "haproxy"
GOALS = {
    "l4_gbit_per_s": ("wirelab-splice", 0.8),
    "l4_conn_per_s": (None, 0.3),
    "l7_req_per_s": ("wirelab-splice", 0.3),
}
"""Per figure: the wirelab row the goal is about (None: every one) and the least ratio to HAProxy."""
APT_PACKAGES = {
    "haproxy": "haproxy",
    "iperf3": "iperf3",
    "wrk": "wrk",
    "nginx": "nginx",
    "h2load": "nghttp2-client",
}
H2_IMPLS = ("wirelab-splice", "haproxy")
"""The rows with HTTP/2 figures (h2load clients over h2c to an HTTP/1.1 backend; wrk's HTTP/1.1
clients to an HTTP/2 backend over h2c), so not direct."""
PARSER_IMPLS = ("wirelab-splice",)
"""The rows that also show `wirelab lb l7 --parser python` (ours instead of llhttp) and the balancer
with its protocol modules interpreted."""
RATIOS = (*GOALS, "l7_h2_req_per_s", "l7_h2_upstream_req_per_s", "l7_relayed_req_per_s")
"""The figures compared with HAProxy's: the goals', and those over HTTP/2, which have none."""
L7_KEYS = ("l7_req_per_s", "l7_p50_ms", "l7_p99_ms")
PACE_SHARE = 0.5
"""The paced latency run's rate, as a share of the least layer 7 maximum among the balancers."""
IN_FLIGHT = 32
MAX_CONNECTIONS = 10_000  # `wirelab lb l4`'s default
FD_RESERVE = 64
STALL_S = 5.0
"""A connection-rate run gives up on connections that see no event for this long."""

COLUMNS = (
    Column("impl", "impl"),
    Column("l4_gbit_per_s", "L4 Gbit/s", ",.2f"),
    Column("l4_gbit_per_s_vs_haproxy", "x haproxy", ".2f"),
    Column("l4_bulk_balancer_cpu_pct", "balancer CPU %", ".0f"),
    Column("l4_conn_per_s", "L4 new conn/s", ",.0f"),
    Column("l4_conn_per_s_vs_haproxy", "x haproxy", ".2f"),
    Column("l4_conn_balancer_cpu_pct", "balancer CPU %", ".0f"),
    Column("l4_conn_errors", "conn errors", ","),
)
L7_COLUMNS = (
    Column("impl", "impl"),
    Column("l7_req_per_s", "L7 req/s (wrk)", ",.0f"),
    Column("l7_req_per_s_vs_haproxy", "x haproxy", ".2f"),
    Column("l7_balancer_cpu_pct", "balancer CPU %", ".0f"),
    Column("l7_paced_req_per_s", "paced at req/s", ",.0f"),
    Column("l7_p50_ms", "p50 ms", ".2f"),
    Column("l7_p99_ms", "p99 ms", ".2f"),
    Column("l7_errors", "errors", ","),
    Column("l7_h2_req_per_s", "h2 req/s (h2load)", ",.0f"),
    Column("l7_h2_req_per_s_vs_haproxy", "x haproxy", ".2f"),
    Column("l7_h2_balancer_cpu_us", "h2 CPU µs/req", ",.0f"),
    Column("l7_h2_errors", "h2 errors", ","),
    Column("l7_h2_upstream_req_per_s", "h2 upstream req/s (wrk)", ",.0f"),
    Column("l7_h2_upstream_req_per_s_vs_haproxy", "x haproxy", ".2f"),
    Column("l7_h2_upstream_balancer_cpu_us", "h2 upstream CPU µs/req", ",.0f"),
    Column("l7_balancer_cpu_us", "CPU µs/req", ",.0f"),
    Column("l7_python_req_per_s", "python parser req/s", ",.0f"),
    Column("l7_python_balancer_cpu_us", "python parser CPU µs/req", ",.0f"),
    Column("l7_interpreted_req_per_s", "interpreted req/s", ",.0f"),
    Column("l7_interpreted_balancer_cpu_us", "interpreted CPU µs/req", ",.0f"),
    Column("l7_relayed_req_per_s", "relayed at L4 req/s", ",.0f"),
    Column("l7_relayed_req_per_s_vs_haproxy", "x haproxy", ".2f"),
    Column("l7_relayed_balancer_cpu_us", "relayed CPU µs/req", ",.0f"),
)


@dataclass(frozen=True, slots=True)
class LbPlan:
    duration_s: int = 3
    impls: tuple[str, ...] = IMPLS
    in_flight: int = IN_FLIGHT


@dataclass(frozen=True, slots=True)
class Pinning:
    """Which cores the balancers get, and which the load (clients, backends); None: not pinned."""

    balancer: frozenset[int] | None
    load: frozenset[int] | None

    @classmethod
    def choose(cls) -> Pinning:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(None, None)
        return cls(frozenset(cores[-1:]), frozenset(cores[:-1]))

    def describe(self) -> str:
        if self.balancer is None or self.load is None:
            return "not pinned: fewer than two cores"
        return (
            f"pinned: the balancer (wirelab or haproxy, one thread) on core {_cores(self.balancer)}; "
            f"clients, backends and iperf3 on core {_cores(self.load)}"
        )


def _cores(cores: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cores))


@dataclass(frozen=True, slots=True)
class ConnTally:
    done: int
    failed: int
    seconds: float


def missing_peers(impls: Sequence[str]) -> list[str]:
    """What the plan needs and this machine lacks, as messages naming the Debian package."""
    needed = ["iperf3", "wrk", "nginx"] + ([PEER] if PEER in impls else [])
    needed += ["h2load"] if any(impl in H2_IMPLS for impl in impls) else []
    return [
        f"{tool} not found on PATH: install Debian's {package} (apt-get install {package})"
        for tool, package in APT_PACKAGES.items()
        if tool in needed and shutil.which(tool) is None
    ]


def haproxy_config(
    port: int,
    backend_port: int,
    *,
    fd_limit: int,
    mode: str = "tcp",
    h2: bool = False,
    h2_upstream: bool = False,
) -> str:
    """HAProxy set up as `wirelab lb l4` (mode tcp) or `wirelab lb l7` (mode http) runs by default:
        round-robin, no checks, 2 s connect timeout, 300 s idle timeout, 10,000 connections (fewer if
        `fd_limit` cannot hold two descriptors for each, since HAProxy refuses to start then); one thread,
        as our balancer is one event loop. In http mode, keep-alive on both sides with idle server
        connections shared between clients (`http-reuse always`, as our upstream pool does) and a 10 s
        request head timeout like ours. With `h2`, the clients speak HTTP/2 in clear (`proto h2`); with
    `h2_upstream`, the backend does."""
    maxconn = min(MAX_CONNECTIONS, (fd_limit - FD_RESERVE) // 2)
    http = (
        "    option http-keep-alive\n    http-reuse always\n"
        "    timeout http-request 10s\n    timeout http-keep-alive 10s\n"
        if mode == "http"
        else ""
    )
    return (
        f"global\n    nbthread 1\n    maxconn {maxconn}\n\n"
        f"defaults\n    mode {mode}\n{http}    timeout connect 2s\n"
        "    timeout client 300s\n    timeout server 300s\n\n"
        f"frontend lb\n    bind 127.0.0.1:{port}{' proto h2' if h2 else ''}\n    default_backend pool\n\n"
        f"backend pool\n    balance roundrobin\n"
        f"    server b0 127.0.0.1:{backend_port}{' proto h2' if h2_upstream else ''}\n"
    )


# -- the loads -----------------------------------------------------------------------------------------


def iperf3_gbit_per_s(port: int, duration_s: int) -> float:
    """One iperf3 client run to `port`: what the server received, in Gbit/s."""
    command = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(duration_s), "-J"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 30, check=False)
    try:
        document = json.loads(result.stdout)
        bits: float = document["end"]["sum_received"]["bits_per_second"]
    except (ValueError, KeyError) as exc:
        detail = result.stdout[-500:] + result.stderr[-500:]
        raise RuntimeError(f"iperf3 to port {port} failed: {detail}") from exc
    return bits / 1e9


def measure_conn_rate(port: int, *, duration_s: float, in_flight: int = IN_FLIGHT) -> ConnTally:
    """Connect, send a byte, read its echo, close: `in_flight` connections at a time for `duration_s`.

    Raw epoll rather than asyncio, so the client costs little next to what it measures (`direct`
    shows its ceiling).
    """
    poller = select.epoll()
    open_socks: dict[int, socket.socket] = {}
    done = failed = 0

    def start() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        open_socks[sock.fileno()] = sock
        poller.register(sock.fileno(), select.EPOLLOUT)

    def finish(fd: int, ok: bool) -> None:
        nonlocal done, failed
        poller.unregister(fd)
        open_socks.pop(fd).close()
        done, failed = done + ok, failed + (not ok)
        if time.perf_counter() < deadline:
            start()

    started = time.perf_counter()
    deadline = started + duration_s
    try:
        for _ in range(in_flight):
            start()
        while open_socks:
            events = poller.poll(STALL_S)
            if not events:
                failed += len(open_socks)
                break
            for fd, mask in events:
                _step(open_socks[fd], fd, mask, poller, finish)
        return ConnTally(done, failed, time.perf_counter() - started)
    finally:
        for sock in open_socks.values():
            sock.close()
        poller.close()


def _step(
    sock: socket.socket, fd: int, mask: int, poller: select.epoll, finish: Callable[[int, bool], None]
) -> None:
    """Advance one connection: connected -> send the byte; readable -> check the echo and finish."""
    if mask & select.EPOLLOUT:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            finish(fd, False)
            return
        try:
            sock.send(b"x")
        except OSError:
            finish(fd, False)
            return
        poller.modify(fd, select.EPOLLIN)
        return
    try:
        echoed = sock.recv(16) == b"x"
    except OSError:
        echoed = False
    finish(fd, echoed)


def serve_echo(port: int) -> None:
    """The connection-rate backend: echo the first bytes, then close; runs until SIGTERM."""

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)
            self.transport.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        async with await loop.create_server(Echo, "127.0.0.1", port, backlog=4096):
            await stop.wait()

    with runner() as loop:
        loop.run(main())


# -- processes -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def run_process(
    command: list[str],
    port: int,
    log: Path,
    cores: frozenset[int] | None,
    env: dict[str, str] | None = None,
) -> Iterator[int]:
    """Run `command` pinned to `cores` until it listens on `port`, yield its pid; stop it after."""
    pin = None if cores is None else functools.partial(os.sched_setaffinity, 0, cores)
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin, env=env)
    try:
        _wait_listening(port, process, log, name=Path(command[0]).name)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(
    port: int, process: subprocess.Popen[bytes], log: Path, *, name: str, timeout: float = 20
) -> None:
    """Watch the socket table rather than connect: a probe would reach iperf3 as a bogus test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited at start: {log.read_text(errors='replace')[-2000:]}")
        if any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
            for c in psutil.net_connections(kind="tcp")
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout}s")


def _balancer_command(
    impl: str,
    port: int,
    backend_port: int,
    workdir: Path,
    *,
    layer: int,
    h2: bool = False,
    h2_upstream: bool = False,
    parser: str | None = None,
) -> list[str]:
    if impl == PEER:
        config = workdir / f"haproxy-{port}.cfg"
        mode = "http" if layer == 7 else "tcp"
        limit = raise_fd_limit()
        text = haproxy_config(port, backend_port, fd_limit=limit, mode=mode, h2=h2, h2_upstream=h2_upstream)
        config.write_text(text)
        return ["haproxy", "-db", "-f", str(config)]
    listen, backend = f"127.0.0.1:{port}", f"127.0.0.1:{backend_port}"
    command = [sys.executable, "-m", "wirelab", "lb", f"l{layer}", "--listen", listen, "--backend", backend]
    if layer == 7:
        command += ["--parser", parser] if parser else []
        return [*command, "--backend-protocol", "h2c"] if h2_upstream else command
    return [*command, "--splice" if impl == "wirelab-splice" else "--copy"]


@dataclass(frozen=True, slots=True)
class _Lab:
    plan: LbPlan
    pinning: Pinning
    workdir: Path
    iperf3_port: int
    echo_port: int
    nginx_port: int
    nginx_h2c_port: int

    @contextlib.contextmanager
    def front(
        self,
        impl: str,
        backend_port: int,
        busy: dict[str, Any],
        key: str,
        *,
        layer: int = 4,
        h2: bool = False,
        h2_upstream: bool = False,
        parser: str | None = None,
        interpreted: bool = False,
    ) -> Iterator[int]:
        """The port that clients of `impl` connect to: a fresh balancer's, or the backend's for direct;
        `interpreted`: ours with its protocol modules run from source.

        Sets `busy[key]` to the share of a core (percent) the balancer used while the block ran: below
        100, the balancer was not what limited the figure.
        """
        if impl == "direct":
            yield backend_port
            return
        port = free_port()
        command = _balancer_command(
            impl,
            port,
            backend_port,
            self.workdir,
            layer=layer,
            h2=h2,
            h2_upstream=h2_upstream,
            parser=parser,
        )
        env = {**os.environ, PURE_PYTHON_ENV: "1"} if interpreted else None
        log = self.workdir / f"{impl}-l{layer}.log"
        with run_process(command, port, log, self.pinning.balancer, env) as pid:
            cpu, started = cpu_seconds(pid), time.perf_counter()
            yield port
            busy[key] = 100 * (cpu_seconds(pid) - cpu) / (time.perf_counter() - started)


def _measure(lab: _Lab, impl: str, progress: Progress, task: TaskID) -> dict[str, Any]:
    busy: dict[str, Any] = {}
    progress.update(task, description=f"{impl}: iperf3 bulk")
    with lab.front(impl, lab.iperf3_port, busy, "l4_bulk_balancer_cpu_pct") as port:
        gbit = iperf3_gbit_per_s(port, lab.plan.duration_s)
    progress.advance(task)
    progress.update(task, description=f"{impl}: new connections")
    with lab.front(impl, lab.echo_port, busy, "l4_conn_balancer_cpu_pct") as port:
        tally = measure_conn_rate(port, duration_s=lab.plan.duration_s, in_flight=lab.plan.in_flight)
    progress.advance(task)
    rate = tally.done / tally.seconds
    if "l4_conn_balancer_cpu_pct" in busy and rate > 0:
        busy["l4_conn_balancer_cpu_us"] = busy["l4_conn_balancer_cpu_pct"] / 100 / rate * 1e6
    row: dict[str, Any] = {
        "impl": impl,
        "l4_gbit_per_s": gbit,
        "l4_conn_per_s": rate,
        "l4_conns": tally.done,
        "l4_conn_errors": tally.failed,
    }
    if impl in L7_IMPLS:
        progress.update(task, description=f"{impl}: L7 maximum (wrk)")
        _load(lab, impl, row, busy, "l7", wrk_req_per_s, backend=lab.nginx_port, layer=7)
    if impl in H2_IMPLS:
        progress.update(task, description=f"{impl}: L7 over HTTP/2 (h2load)")
        _load(lab, impl, row, busy, "l7_h2", h2load_req_per_s, backend=lab.nginx_port, layer=7, h2=True)
        progress.update(task, description=f"{impl}: L7 to an HTTP/2 backend (wrk)")
        upstream = {"backend": lab.nginx_h2c_port, "layer": 7, "h2_upstream": True}
        _load(lab, impl, row, busy, "l7_h2_upstream", wrk_req_per_s, **upstream)
        progress.update(task, description=f"{impl}: the L7 load relayed at layer 4 (wrk)")
        relay = "wirelab-copy" if impl.startswith("wirelab") else impl
        _load(lab, relay, row, busy, "l7_relayed", wrk_req_per_s, backend=lab.nginx_port, layer=4)
    if impl in PARSER_IMPLS:
        progress.update(task, description=f"{impl}: L7 with the Python parser (wrk)")
        python: dict[str, Any] = {"backend": lab.nginx_port, "layer": 7, "parser": "python"}
        _load(lab, impl, row, busy, "l7_python", wrk_req_per_s, **python)
        progress.update(task, description=f"{impl}: L7 with its protocol modules interpreted (wrk)")
        interpreted: dict[str, Any] = {"backend": lab.nginx_port, "layer": 7, "interpreted": True}
        _load(lab, impl, row, busy, "l7_interpreted", wrk_req_per_s, **interpreted)
        row["compiled"] = compiled()
    progress.advance(task)
    return {**row, **busy}


def _load(
    lab: _Lab,
    impl: str,
    row: dict[str, Any],
    busy: dict[str, Any],
    prefix: str,
    run: Callable[[int, int], tuple[float, int]],
    *,
    backend: int,
    **front: Any,
) -> None:
    """One load through a fresh balancer: `{prefix}_req_per_s` and `_errors` in the row, the balancer's
    share of a core and its CPU per request in `busy`."""
    with lab.front(impl, backend, busy, f"{prefix}_balancer_cpu_pct", **front) as port:
        rate, row[f"{prefix}_errors"] = run(port, lab.plan.duration_s)
        row[f"{prefix}_req_per_s"] = rate
    share = busy.get(f"{prefix}_balancer_cpu_pct")
    if share is not None and rate > 0:
        busy[f"{prefix}_balancer_cpu_us"] = share / 100 / rate * 1e6


def _measure_paced(lab: _Lab, rows: list[dict[str, Any]], progress: Progress, task: TaskID) -> None:
    """Add `l7_p50_ms`/`l7_p99_ms` to the layer 7 rows, all at one rate below every balancer's maximum."""
    maxima = [r["l7_req_per_s"] for r in rows if "l7_req_per_s" in r and r["impl"] != "direct"]
    maxima = maxima or [r["l7_req_per_s"] for r in rows if "l7_req_per_s" in r]
    if not maxima or min(maxima) <= 0:
        return
    rate = PACE_SHARE * min(maxima)
    for row in rows:
        if "l7_req_per_s" not in row:
            continue
        progress.update(task, description=f"{row['impl']}: L7 latency at {rate:,.0f} req/s")
        with lab.front(row["impl"], lab.nginx_port, {}, "l7_paced_balancer_cpu_pct", layer=7) as port:
            tally = paced_latency_ms(port, rate=rate, duration_s=lab.plan.duration_s)
        row.update(l7_paced_req_per_s=rate, l7_p50_ms=tally.p(50), l7_p99_ms=tally.p(99))
        row["l7_errors"] += tally.failed
        progress.advance(task)


def _measure_all(plan: LbPlan, pinning: Pinning, workdir: Path, progress: Progress) -> list[dict[str, Any]]:
    lab = _Lab(plan, pinning, workdir, free_port(), free_port(), free_port(), free_port())
    iperf3 = ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(lab.iperf3_port)]
    echo = [sys.executable, "-c", f"from wirelab.bench.lb import serve_echo; serve_echo({lab.echo_port})"]
    config = workdir / "nginx.conf"
    config.write_text(nginx_config(lab.nginx_port, workdir, h2c_port=lab.nginx_h2c_port))
    l7 = sum(impl in L7_IMPLS for impl in plan.impls)
    task = progress.add_task("starting backends", total=3 * len(plan.impls) + l7)
    with (
        run_process(iperf3, lab.iperf3_port, workdir / "iperf3.log", pinning.load),
        run_process(echo, lab.echo_port, workdir / "echo.log", pinning.load),
        run_process(nginx_command(config, workdir), lab.nginx_port, workdir / "nginx.log", pinning.load),
    ):
        rows = [_measure(lab, impl, progress, task) for impl in plan.impls]
        _measure_paced(lab, rows, progress, task)
        return rows


def _with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    peer = next((row for row in rows if row["impl"] == PEER), None)
    for row in rows:
        for key in RATIOS:
            wirelab = row["impl"].startswith("wirelab") and key in row
            if peer is not None and wirelab and peer.get(key, 0) > 0:
                row[f"{key}_vs_haproxy"] = row[key] / peer[key]
    return rows


def run_lb(plan: LbPlan, *, json_path: Path | None, console: Console, progress: Progress) -> int:
    """Measure every implementation, print the table; exit status 1 if a figure came out empty."""
    pinning = Pinning.choose()
    workdir = Path(tempfile.mkdtemp(prefix="wirelab-bench-lb-"))
    own = os.sched_getaffinity(0)
    try:
        if pinning.load is not None:
            os.sched_setaffinity(0, pinning.load)  # the client runs in this process
        with progress:
            rows = _with_ratios(_measure_all(plan, pinning, workdir, progress))
    finally:
        os.sched_setaffinity(0, own)
        shutil.rmtree(workdir, ignore_errors=True)
    title = f"Layer 4 balancers, {plan.duration_s} s per load, {plan.in_flight} connections in flight"
    print_table(console, title, COLUMNS, rows)
    title = (
        f"Layer 7 balancers, {plan.duration_s} s per load, wrk with {WRK_CONNECTIONS} keep-alive "
        "connections; L7 has one data path (`wirelab lb l7`), shown on the wirelab-splice row"
    )
    print_table(console, title, L7_COLUMNS, [row for row in rows if "l7_req_per_s" in row])
    for line in [pinning.describe(), *summary(rows)]:
        console.print(line)
    if json_path is not None:
        plan_json = {"duration_s": plan.duration_s, "impls": list(plan.impls), "in_flight": plan.in_flight}
        write_json(json_path, "lb", rows, plan=plan_json, pinning=pinning.describe())
    return 1 if any(map(_empty, rows)) else 0


def _empty(row: dict[str, Any]) -> bool:
    """A figure the row should carry is missing or not positive."""
    keys = ("l4_gbit_per_s", "l4_conn_per_s") + (L7_KEYS if row["impl"] in L7_IMPLS else ())
    keys += (
        ("l7_h2_req_per_s", "l7_h2_upstream_req_per_s", "l7_relayed_req_per_s")
        if row["impl"] in H2_IMPLS
        else ()
    )
    keys += ("l7_python_req_per_s", "l7_interpreted_req_per_s") if row["impl"] in PARSER_IMPLS else ()
    return any(row.get(key, 0) <= 0 for key in keys)


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The goals beside the ratios, in words; the latency each balancer adds over direct at the paced
    rate (direct's own p50/p99 include the paced client's timer wake-ups, ~1 ms, which cancel out);
    the balancers' CPU cost per connection and per L7 request, which still compares them when the
    load rather than the balancer set the rate; and what `direct` means."""
    names = {
        "l4_gbit_per_s": "throughput",
        "l4_conn_per_s": "new connections/s",
        "l7_req_per_s": "L7 req/s",
    }
    lines = []
    for key, (impl, goal) in GOALS.items():
        for row in rows:
            ratio = row.get(f"{key}_vs_haproxy")
            if ratio is None or impl not in (None, row["impl"]):
                continue
            verdict = "met" if ratio >= goal else "short"
            lines.append(f"{row['impl']}: {names[key]} {ratio:.3f}x haproxy (goal ≥ {goal}x: {verdict})")
    lines += _added_latency(rows)
    costs_of = (
        ("l4_conn_balancer_cpu_us", "new connection"),
        ("l7_balancer_cpu_us", "L7 request"),
        ("l7_python_balancer_cpu_us", "L7 request read by the Python parser"),
        ("l7_interpreted_balancer_cpu_us", "L7 request with the protocol modules interpreted"),
        ("l7_relayed_balancer_cpu_us", "L7 request relayed at layer 4 (no HTTP work)"),
        ("l7_h2_balancer_cpu_us", "L7 request over HTTP/2"),
    )
    for key, what in costs_of:
        costs = [_cost(r, rows, key) for r in rows if key in r]
        if costs:
            lines.append(f"balancer CPU per {what}: {', '.join(costs)}")
    for row in rows:
        if "compiled" in row:
            how = "compiled (mypyc)" if row["compiled"] else "interpreted: no current build (`make native`)"
            lines.append(f"{row['impl']}: the L7 row ran with its protocol modules {how}")
    lines.append("direct: no balancer, the ceiling of the clients and backends on their cores")
    return lines


def _cost(row: dict[str, Any], rows: Sequence[dict[str, Any]], key: str) -> str:
    """CPU per connection or request (`key`), and for wirelab rows what it means at a full core:
    HAProxy's cost over ours."""
    text = f"{row['impl']} {row[key]:,.0f} µs"
    peer = next((r for r in rows if r["impl"] == PEER and key in r), None)
    if peer is not None and row is not peer:
        text += f" ({peer[key] / row[key]:.2f}x haproxy's per core)"
    return text


def _added_latency(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What each balancer adds to direct's p50 and p99 at the paced rate."""
    direct = next((r for r in rows if r["impl"] == "direct" and "l7_p50_ms" in r), None)
    if direct is None:
        return []
    return [
        f"{row['impl']}: L7 adds p50 {row['l7_p50_ms'] - direct['l7_p50_ms']:+.2f} ms, "
        f"p99 {row['l7_p99_ms'] - direct['l7_p99_ms']:+.2f} ms over direct "
        f"at {row['l7_paced_req_per_s']:,.0f} req/s"
        for row in rows
        if row is not direct and "l7_p50_ms" in row
    ]

"""`wirelab bench lb`: our layer 4 balancer beside HAProxy, with the same backends and the same load.

Theory of operation: per implementation, the bench starts a balancer in front of one backend, drives
it, and stops it; `direct` skips the balancer and is the ceiling that the backends and clients allow.

    wirelab-splice  `python -m wirelab lb l4 --splice` (zero-copy through a pipe)
    wirelab-copy    `python -m wirelab lb l4 --copy` (recv/send through user space)
    haproxy         Debian's haproxy, `mode tcp`, written by `haproxy_config`: roundrobin, no health
                    checks, one thread, the same connect/idle timeouts and connection limit as ours
    direct          straight to the backend

Two loads, each for `duration_s`:

    bulk            iperf3 through the balancer to one iperf3 server (one backend, since iperf3's
                    control and data connections must reach the same server): received Gbit/s
    new conns       an epoll client keeping IN_FLIGHT connections open at a time, each one connect,
                    one byte out, its echo back, close, against a tiny echo backend: connections/s

Beside each figure, the share of a core the balancer used meanwhile (from its CPU time): a balancer
under 100% was held back by the load, not by itself, which `direct` then shows.

With two cores or more, the balancer (ours or HAProxy) runs alone on the last core and everything
else (the bench's client, iperf3 and the backends) on the others, so a balancer never competes with
its load for a CPU; the output says which cores. Layer 7 (wrk through `wirelab lb l7` and HAProxy
`mode http`) will add its loads to `_measure` and its columns to COLUMNS.
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

from wirelab.bench.report import Column, cpu_seconds, print_table, raise_fd_limit, write_json
from wirelab.testing import free_port

__all__ = [
    "GOALS",
    "IMPLS",
    "ConnTally",
    "LbPlan",
    "Pinning",
    "haproxy_config",
    "iperf3_gbit_per_s",
    "measure_conn_rate",
    "missing_peers",
    "run_lb",
    "serve_echo",
    "summary",
]

IMPLS = ("wirelab-splice", "wirelab-copy", "haproxy", "direct")
PEER = "haproxy"
GOALS = {"l4_gbit_per_s": ("wirelab-splice", 0.8), "l4_conn_per_s": (None, 0.3)}
"""Per figure: the wirelab row the goal is about (None: every one) and the least ratio to HAProxy."""
APT_PACKAGES = {"haproxy": "haproxy", "iperf3": "iperf3"}
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
    needed = ["iperf3"] + ([PEER] if PEER in impls else [])
    return [
        f"{tool} not found on PATH: install Debian's {package} (apt-get install {package})"
        for tool, package in APT_PACKAGES.items()
        if tool in needed and shutil.which(tool) is None
    ]


def haproxy_config(port: int, backend_port: int, *, fd_limit: int) -> str:
    """HAProxy set up as `wirelab lb l4` runs by default: round-robin, no checks, 2 s connect timeout,
    300 s idle timeout, 10,000 connections (fewer if `fd_limit` cannot hold two descriptors for each,
    since HAProxy refuses to start then); one thread, as our balancer is one event loop."""
    maxconn = min(MAX_CONNECTIONS, (fd_limit - FD_RESERVE) // 2)
    return (
        f"global\n    nbthread 1\n    maxconn {maxconn}\n\n"
        "defaults\n    mode tcp\n    timeout connect 2s\n"
        "    timeout client 300s\n    timeout server 300s\n\n"
        f"frontend lb\n    bind 127.0.0.1:{port}\n    default_backend pool\n\n"
        f"backend pool\n    balance roundrobin\n    server b0 127.0.0.1:{backend_port}\n"
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

    try:
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main())


# -- processes -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _process(command: list[str], port: int, log: Path, cores: frozenset[int] | None) -> Iterator[int]:
    """Run `command` pinned to `cores` until it listens on `port`, yield its pid; stop it after."""
    pin = None if cores is None else functools.partial(os.sched_setaffinity, 0, cores)
    with log.open("ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=pin)
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


def _balancer_command(impl: str, port: int, backend_port: int, workdir: Path) -> list[str]:
    if impl == PEER:
        config = workdir / f"haproxy-{port}.cfg"
        config.write_text(haproxy_config(port, backend_port, fd_limit=raise_fd_limit()))
        return ["haproxy", "-db", "-f", str(config)]
    mode = "--splice" if impl == "wirelab-splice" else "--copy"
    listen, backend = f"127.0.0.1:{port}", f"127.0.0.1:{backend_port}"
    return [sys.executable, "-m", "wirelab", "lb", "l4", "--listen", listen, "--backend", backend, mode]


@dataclass(frozen=True, slots=True)
class _Lab:
    plan: LbPlan
    pinning: Pinning
    workdir: Path
    iperf3_port: int
    echo_port: int

    @contextlib.contextmanager
    def front(self, impl: str, backend_port: int, busy: dict[str, Any], key: str) -> Iterator[int]:
        """The port that clients of `impl` connect to: a fresh balancer's, or the backend's for direct.

        Sets `busy[key]` to the share of a core (percent) the balancer used while the block ran: below
        100, the balancer was not what limited the figure.
        """
        if impl == "direct":
            yield backend_port
            return
        port = free_port()
        command = _balancer_command(impl, port, backend_port, self.workdir)
        with _process(command, port, self.workdir / f"{impl}.log", self.pinning.balancer) as pid:
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
    return {
        "impl": impl,
        "l4_gbit_per_s": gbit,
        "l4_conn_per_s": rate,
        "l4_conns": tally.done,
        "l4_conn_errors": tally.failed,
        **busy,
    }


def _measure_all(plan: LbPlan, pinning: Pinning, workdir: Path, progress: Progress) -> list[dict[str, Any]]:
    lab = _Lab(plan, pinning, workdir, free_port(), free_port())
    iperf3 = ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(lab.iperf3_port)]
    echo = [sys.executable, "-c", f"from wirelab.bench.lb import serve_echo; serve_echo({lab.echo_port})"]
    task = progress.add_task("starting backends", total=2 * len(plan.impls))
    with (
        _process(iperf3, lab.iperf3_port, workdir / "iperf3.log", pinning.load),
        _process(echo, lab.echo_port, workdir / "echo.log", pinning.load),
    ):
        return [_measure(lab, impl, progress, task) for impl in plan.impls]


def _with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    peer = next((row for row in rows if row["impl"] == PEER), None)
    for row in rows:
        for key in GOALS:
            if peer is not None and row["impl"].startswith("wirelab") and peer[key] > 0:
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
    for line in [pinning.describe(), *summary(rows)]:
        console.print(line)
    if json_path is not None:
        plan_json = {"duration_s": plan.duration_s, "impls": list(plan.impls), "in_flight": plan.in_flight}
        write_json(json_path, "lb", rows, plan=plan_json, pinning=pinning.describe())
    empty = any(row["l4_gbit_per_s"] <= 0 or row["l4_conn_per_s"] <= 0 for row in rows)
    return 1 if empty else 0


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The goals beside the ratios, in words; the balancers' CPU cost per connection, which still
    compares them when the load rather than the balancer set the rate; and what `direct` means."""
    names = {"l4_gbit_per_s": "throughput", "l4_conn_per_s": "new connections/s"}
    lines = []
    for key, (impl, goal) in GOALS.items():
        for row in rows:
            ratio = row.get(f"{key}_vs_haproxy")
            if ratio is None or impl not in (None, row["impl"]):
                continue
            verdict = "met" if ratio >= goal else "short"
            lines.append(f"{row['impl']}: {names[key]} {ratio:.3f}x haproxy (goal ≥ {goal}x: {verdict})")
    costs = [r for r in rows if "l4_conn_balancer_cpu_us" in r]
    if costs:
        lines.append(f"balancer CPU per new connection: {', '.join(_cost(r, rows) for r in costs)}")
    lines.append("direct: no balancer, the ceiling of the clients and backends on their cores")
    return lines


def _cost(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """CPU per connection, and for wirelab rows what it means at a full core: HAProxy's cost over ours."""
    text = f"{row['impl']} {row['l4_conn_balancer_cpu_us']:,.0f} µs"
    peer = next((r for r in rows if r["impl"] == PEER and "l4_conn_balancer_cpu_us" in r), None)
    if peer is not None and row is not peer:
        text += (
            f" ({peer['l4_conn_balancer_cpu_us'] / row['l4_conn_balancer_cpu_us']:.2f}x haproxy's per core)"
        )
    return text

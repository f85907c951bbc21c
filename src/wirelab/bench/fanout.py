"""`wirelab bench fanout`: one server, N idle subscribers, a few messages to all of them.

Theory of operation, for each implementation in turn (a fresh server process each time):

1. Start the server and publish one warm-up login, so the topic exists (long polling answers 404
   before the first login) and the server has run its code paths once; then read its RSS.
2. Start the swarm processes (`wirelab.bench.swarm`) and connect the subscribers in batches, with
   a progress bar; wait until the server itself reports them all subscribed (`/healthz` followers
   plus waiters for ours, `/stats` for the peer), let it settle, and read its RSS again. The
   difference divided by N is the memory an idle subscriber costs.
3. Publish `messages` logins, each once every subscriber has the previous one (so each message is
   a clean fan-out to N idle connections) and note every receipt. Delivered msg/s is deliveries
   divided by (last receipt - first publish); latency is receipt - the event's `at`.

The implementations: `wirelab-mixed` (a third each SSE, WebSocket, long polling, on our server),
`wirelab-ws` (WebSocket only, our server) and `websockets-broadcast` (the peer in
`wirelab.bench.peer`). Server and client CPU seconds over the publishing phase are reported too, so
a reader can tell which side was the bottleneck.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
from rich.console import Console
from rich.progress import Progress

from wirelab.bench import runner
from wirelab.bench.peer import PeerProcess
from wirelab.bench.report import (
    Column,
    cpu_seconds,
    percentile,
    print_table,
    raise_fd_limit,
    rss_bytes,
    write_json,
)
from wirelab.bench.swarm import SwarmProcess
from wirelab.testing import ServerProcess, free_port

__all__ = ["IMPLS", "PEER", "FanoutPlan", "measure", "run_fanout"]

PEER = "websockets-broadcast"
IMPLS = ("wirelab-mixed", "wirelab-ws", PEER)
MIXES = {"wirelab-mixed": ("sse", "ws", "long"), "wirelab-ws": ("ws",), PEER: ("ws",)}
GOAL_RSS_KIB = 14.0
GOAL_RATIO = 1.0

COLUMNS = (
    Column("impl", "impl"),
    Column("clients", "clients", ","),
    Column("delivered_per_s", "msg/s", ",.0f"),
    Column("latency_p50_ms", "p50 ms", ".1f"),
    Column("latency_p99_ms", "p99 ms", ".1f"),
    Column("rss_per_conn_kib", "KiB/conn", ".1f"),
    Column("fanout_s", "fan-out s", ".2f"),
    Column("server_cpu_s", "srv CPU s", ".2f"),
    Column("client_cpu_s", "cli CPU s", ".2f"),
    Column("missing", "missing", ","),
)


@dataclass(frozen=True, slots=True)
class FanoutPlan:
    clients: int = 10_000
    messages: int = 5
    batch: int = 500
    procs: int = 2
    impls: tuple[str, ...] = IMPLS
    timeout_s: float = 60.0
    settle_s: float = 1.0


class Target(Protocol):
    """A server under test, as the measurement sees it: a pid, a port and two control calls."""

    @property
    def pid(self) -> int: ...

    @property
    def port(self) -> int: ...

    async def publish(self, http: httpx.AsyncClient, user: str) -> int: ...

    async def subscribers(self, http: httpx.AsyncClient) -> int: ...


class WirelabTarget:
    def __init__(self, server: ServerProcess) -> None:
        self._server = server

    @property
    def pid(self) -> int:
        return self._server.pid

    @property
    def port(self) -> int:
        return self._server.port

    async def publish(self, http: httpx.AsyncClient, user: str) -> int:
        response = await http.post("/logins", json={"user": user})
        response.raise_for_status()
        version: int = response.json()["version"]
        return version

    async def subscribers(self, http: httpx.AsyncClient) -> int:
        response = await http.get("/healthz")
        response.raise_for_status()
        feed = response.json()["feed"]
        return int(feed["followers"] + feed["waiters"])


class PeerTarget:
    def __init__(self, peer: PeerProcess) -> None:
        self._peer = peer

    @property
    def pid(self) -> int:
        return self._peer.pid

    @property
    def port(self) -> int:
        return self._peer.port

    async def publish(self, http: httpx.AsyncClient, user: str) -> int:
        response = await http.get("/publish", params={"user": user})
        response.raise_for_status()
        version: int = response.json()["version"]
        return version

    async def subscribers(self, http: httpx.AsyncClient) -> int:
        response = await http.get("/stats")
        response.raise_for_status()
        return int(response.json()["subscribers"])


@contextlib.contextmanager
def open_target(impl: str, work_dir: Path) -> Iterator[Target]:
    """Start the server `impl` needs as a child process; stop it on the way out, whatever happens."""
    if impl == PEER:
        with PeerProcess(free_port(), log_path=work_dir / "peer.log") as peer:
            yield PeerTarget(peer)
        return
    data_dir = work_dir / impl
    with ServerProcess(data_dir, "--log-level", "warning") as server:
        yield WirelabTarget(server)


# -- one implementation --------------------------------------------------------------------------


@dataclass
class _Phase:
    """What `measure` learns on its way, gathered into a row at the end."""

    connected: int = 0
    connect_s: float = 0.0
    rss_before: int = 0
    rss_idle: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0


async def measure(
    impl: str, target: Target, plan: FanoutPlan, work_dir: Path, progress: Progress
) -> dict[str, Any]:
    """Connect, measure idle memory, fan messages out; one table row."""
    phase = _Phase()
    base = f"http://127.0.0.1:{target.port}"
    async with httpx.AsyncClient(base_url=base, timeout=120) as http, contextlib.AsyncExitStack() as stack:
        after = await target.publish(http, "warm-up")
        await asyncio.sleep(plan.settle_s / 2)
        phase.rss_before = rss_bytes(target.pid)
        swarms = [
            await stack.enter_async_context(SwarmProcess(work_dir / f"swarm-{i}.log"))
            for i in range(plan.procs)
        ]
        await _connect(impl, target, http, swarms, plan, after, phase, progress)
        phase.rss_idle = rss_bytes(target.pid)
        await _fan_out(impl, target, http, swarms, plan, phase, progress)
        reports = await asyncio.gather(*(s.request({"op": "report"}) for s in swarms))
    return _row(impl, plan, phase, reports)


async def _connect(
    impl: str,
    target: Target,
    http: httpx.AsyncClient,
    swarms: Sequence[SwarmProcess],
    plan: FanoutPlan,
    after: int,
    phase: _Phase,
    progress: Progress,
) -> None:
    kinds = _kinds(MIXES[impl], plan.clients)
    task = progress.add_task(f"{impl}: connect", total=plan.clients)
    done = [0] * len(swarms)

    def report(index: int) -> Callable[[int], None]:
        def update(count: int) -> None:
            done[index] = count
            progress.update(task, completed=sum(done))

        return update

    started = time.monotonic()
    batch = max(1, math.ceil(plan.batch / len(swarms)))
    replies = await asyncio.gather(
        *(
            swarm.request(
                {"op": "connect", "port": target.port, "kinds": part, "after": after, "batch": batch},
                report(i),
            )
            for i, (swarm, part) in enumerate(zip(swarms, _split(kinds, len(swarms)), strict=True))
        )
    )
    phase.connected = sum(r["connected"] for r in replies)
    _complain_about_failures(progress.console, impl, replies)
    await _wait_subscribed(target, http, phase.connected, plan.timeout_s)
    phase.connect_s = time.monotonic() - started
    await asyncio.sleep(plan.settle_s)


def _kinds(mix: Sequence[str], clients: int) -> list[str]:
    """Round-robin over the mix, so every batch and every swarm process gets its share of each kind."""
    return [mix[i % len(mix)] for i in range(clients)]


def _split(kinds: list[str], parts: int) -> list[list[str]]:
    return [kinds[i::parts] for i in range(parts)]


def _complain_about_failures(console: Console, impl: str, replies: Sequence[dict[str, Any]]) -> None:
    failed = sum(r["failed"] for r in replies)
    if failed:
        reasons = {k: v for r in replies for k, v in r["errors"].items()}
        console.print(f"[yellow]{impl}: {failed} subscribers failed to connect: {reasons}")


async def _wait_subscribed(target: Target, http: httpx.AsyncClient, expected: int, seconds: float) -> None:
    """Connected is not subscribed: wait until the server itself counts every subscriber.

    Polling is the only way to ask a server in another process; it stops after `seconds`.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                if await target.subscribers(http) >= expected:
                    return
                await asyncio.sleep(0.2)


async def _fan_out(
    impl: str,
    target: Target,
    http: httpx.AsyncClient,
    swarms: Sequence[SwarmProcess],
    plan: FanoutPlan,
    phase: _Phase,
    progress: Progress,
) -> None:
    task = progress.add_task(f"{impl}: publish", total=plan.messages)
    server_cpu, client_cpu = cpu_seconds(target.pid), _client_cpu(swarms)
    for n in range(plan.messages):
        version = await target.publish(http, f"user-{n}")
        command = {"op": "await", "version": version, "seconds": plan.timeout_s}
        await asyncio.gather(*(s.request(command) for s in swarms))
        progress.advance(task)
    phase.server_cpu_s = cpu_seconds(target.pid) - server_cpu
    phase.client_cpu_s = _client_cpu(swarms) - client_cpu


def _client_cpu(swarms: Sequence[SwarmProcess]) -> float:
    return sum(cpu_seconds(s.pid) for s in swarms)


def _row(impl: str, plan: FanoutPlan, phase: _Phase, reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for r in reports for x in r["latencies_ms"]]
    firsts = [r["first_at"] for r in reports if r["first_at"] is not None]
    lasts = [r["last_receipt"] for r in reports if r["last_receipt"] is not None]
    fanout_s = max(lasts) - min(firsts) if firsts else None
    errors = {k: v for r in reports for k, v in r["errors"].items()}
    return {
        "impl": impl,
        "clients": phase.connected,
        "delivered_per_s": len(latencies) / fanout_s if fanout_s else None,
        "latency_p99_ms": percentile(latencies, 99),
        "rss_per_conn_kib": _per_conn_kib(phase),
        "latency_p50_ms": percentile(latencies, 50),
        "messages": plan.messages,
        "deliveries": len(latencies),
        "missing": phase.connected * plan.messages - len(latencies),
        "fanout_s": fanout_s,
        "connect_s": phase.connect_s,
        "server_rss_idle_mib": phase.rss_idle / (1 << 20),
        "server_cpu_s": phase.server_cpu_s,
        "client_cpu_s": phase.client_cpu_s,
        "mix": "+".join(MIXES[impl]),
        "errors": errors,
    }


def _per_conn_kib(phase: _Phase) -> float | None:
    if not phase.connected:
        return None
    return (phase.rss_idle - phase.rss_before) / phase.connected / 1024


# -- the whole scenario ----------------------------------------------------------------------------


def run_fanout(plan: FanoutPlan, *, json_path: Path | None, console: Console, progress: Progress) -> int:
    """Measure every implementation in `plan`, print the table and the ratios; the exit status."""
    fd_limit = raise_fd_limit()
    if plan.clients + 100 > fd_limit:
        console.print(f"[yellow]the file-descriptor limit ({fd_limit}) is tight for {plan.clients} clients")
    work_dir = Path(tempfile.mkdtemp(prefix="wirelab-fanout-"))
    try:
        rows = _measure_all(plan, work_dir, progress)
    except Exception:
        console.print(f"[red]the servers' and clients' logs are kept in {work_dir}")
        raise
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    shutil.rmtree(work_dir, ignore_errors=True)
    print_table(
        console, f"fan-out to {plan.clients:,} idle subscribers, {plan.messages} messages", COLUMNS, rows
    )
    for line in summary(rows):
        console.print(line)
    if json_path is not None:
        write_json(json_path, "fanout", rows, plan={"clients": plan.clients, "messages": plan.messages})
    return 0 if all(row["missing"] == 0 for row in rows) else 1


def _measure_all(plan: FanoutPlan, work_dir: Path, progress: Progress) -> list[dict[str, Any]]:
    """One fresh server process per implementation, so each one's memory starts from its own baseline."""
    rows = []
    with progress:
        for impl in plan.impls:
            with open_target(impl, work_dir) as target:
                rows.append(runner.run(measure(impl, target, plan, work_dir, progress)))
    return rows


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Ratios against websockets' broadcast(), then the goals, each with what was reached."""
    by_impl = {row["impl"]: row for row in rows}
    peer = by_impl.get(PEER)
    lines = []
    if peer is not None:
        for row in rows:
            if row is not peer:
                lines.append(
                    f"{row['impl']} vs {PEER}: delivered msg/s "
                    f"{_ratio(row['delivered_per_s'], peer['delivered_per_s'])}, p99 latency "
                    f"{_ratio(row['latency_p99_ms'], peer['latency_p99_ms'])}, RSS/conn "
                    f"{_ratio(row['rss_per_conn_kib'], peer['rss_per_conn_kib'])}"
                )
    ws = by_impl.get("wirelab-ws")
    if ws is not None:
        lines.append(
            _goal("RSS per idle WebSocket", ws["rss_per_conn_kib"], GOAL_RSS_KIB, " KiB", below=True)
        )
        if peer is not None and ws["delivered_per_s"] and peer["delivered_per_s"]:
            ratio = ws["delivered_per_s"] / peer["delivered_per_s"]
            lines.append(_goal("fan-out vs websockets broadcast()", ratio, GOAL_RATIO, "x", below=False))
    return lines


def _ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def _goal(name: str, value: float | None, goal: float, unit: str, *, below: bool) -> str:
    if value is None:
        return f"goal {name}: not measured"
    met = value <= goal if below else value >= goal
    sign = "<=" if below else ">="
    verdict = "[green]met" if met else "[red]not met"
    return f"goal {name} {sign} {goal:g}{unit}: {value:.2f}{unit} ({verdict}[/])"

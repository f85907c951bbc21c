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
import functools
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress

from wirelab.bench import runner
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
from wirelab.bench.targets import PEER, Target, open_target

__all__ = ["IMPLS", "PEER", "FanoutPlan", "measure", "run_fanout", "summary"]

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


# -- one implementation --------------------------------------------------------------------------


@dataclass
class _Run:
    """One implementation's run: what it works with, and the figures it gathers on the way."""

    impl: str
    target: Target
    plan: FanoutPlan
    http: httpx.AsyncClient
    progress: Progress
    swarms: list[SwarmProcess] = field(default_factory=list)
    connected: int = 0
    connect_s: float = 0.0
    rss_before: int = 0
    rss_idle: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0


async def measure(
    impl: str, target: Target, plan: FanoutPlan, work_dir: Path, progress: Progress
) -> dict[str, Any]:
    """Warm up, connect, measure idle memory, fan the messages out; one table row."""
    base = f"http://127.0.0.1:{target.port}"
    async with httpx.AsyncClient(base_url=base, timeout=120) as http, contextlib.AsyncExitStack() as stack:
        run = _Run(impl, target, plan, http, progress)
        after = await target.publish(http, "warm-up")
        await asyncio.sleep(plan.settle_s / 2)
        run.rss_before = rss_bytes(target.pid)
        for i in range(plan.procs):
            run.swarms.append(await stack.enter_async_context(SwarmProcess(work_dir / f"swarm-{i}.log")))
        await _connect(run, after)
        run.rss_idle = rss_bytes(target.pid)
        await _fan_out(run)
        reports = await asyncio.gather(*(s.request({"op": "report"}) for s in run.swarms))
    return _row(run, reports)


async def _connect(run: _Run, after: int) -> None:
    """Open every subscriber in batches, then wait until the server counts them all, then settle."""
    started = time.monotonic()
    on_progress = _progress_adder(run.progress, f"{run.impl}: connect", run.plan.clients, len(run.swarms))
    batch = max(1, math.ceil(run.plan.batch / len(run.swarms)))
    parts = _split(_kinds(MIXES[run.impl], run.plan.clients), len(run.swarms))
    replies = await asyncio.gather(
        *(
            swarm.request(
                {"op": "connect", "port": run.target.port, "kinds": kinds, "after": after, "batch": batch},
                functools.partial(on_progress, i),
            )
            for i, (swarm, kinds) in enumerate(zip(run.swarms, parts, strict=True))
        )
    )
    run.connected = sum(r["connected"] for r in replies)
    _complain_about_failures(run.progress.console, run.impl, replies)
    if not await _wait_subscribed(run.target, run.http, run.connected, run.plan.timeout_s):
        run.progress.console.print(f"[yellow]{run.impl}: not every client was subscribed in time")
    run.connect_s = time.monotonic() - started
    await asyncio.sleep(run.plan.settle_s)


def _progress_adder(progress: Progress, title: str, total: int, parts: int) -> Callable[[int, int], None]:
    """A callback for part i's running count, shown as one bar over all parts."""
    task = progress.add_task(title, total=total)
    counts = [0] * parts

    def update(part: int, count: int) -> None:
        counts[part] = count
        progress.update(task, completed=sum(counts))

    return update


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


async def _wait_subscribed(target: Target, http: httpx.AsyncClient, expected: int, seconds: float) -> bool:
    """Connected is not subscribed: wait until the server itself counts every subscriber.

    Polling is the only way to ask a server in another process; False if `seconds` ran out.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while True:
                if await target.subscribers(http) >= expected:
                    return True
                await asyncio.sleep(0.2)
    return False


async def _fan_out(run: _Run) -> None:
    """Publish each message once every subscriber has the previous one; CPU of both sides meanwhile."""
    task = run.progress.add_task(f"{run.impl}: publish", total=run.plan.messages)
    server_cpu, client_cpu = cpu_seconds(run.target.pid), _client_cpu(run.swarms)
    for n in range(run.plan.messages):
        version = await run.target.publish(run.http, f"user-{n}")
        command = {"op": "await", "version": version, "seconds": run.plan.timeout_s}
        await asyncio.gather(*(s.request(command) for s in run.swarms))
        run.progress.advance(task)
    run.server_cpu_s = cpu_seconds(run.target.pid) - server_cpu
    run.client_cpu_s = _client_cpu(run.swarms) - client_cpu


def _client_cpu(swarms: Sequence[SwarmProcess]) -> float:
    return sum(cpu_seconds(s.pid) for s in swarms)


def _row(run: _Run, reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    latencies = [x for r in reports for x in r["latencies_ms"]]
    firsts = [r["first_at"] for r in reports if r["first_at"] is not None]
    lasts = [r["last_receipt"] for r in reports if r["last_receipt"] is not None]
    fanout_s = max(lasts) - min(firsts) if firsts else None
    return {
        "impl": run.impl,
        "clients": run.connected,
        "delivered_per_s": len(latencies) / fanout_s if fanout_s else None,
        "latency_p99_ms": percentile(latencies, 99),
        "rss_per_conn_kib": (run.rss_idle - run.rss_before) / run.connected / 1024
        if run.connected
        else None,
        "latency_p50_ms": percentile(latencies, 50),
        "messages": run.plan.messages,
        "deliveries": len(latencies),
        "missing": run.connected * run.plan.messages - len(latencies),
        "fanout_s": fanout_s,
        "connect_s": run.connect_s,
        "server_rss_idle_mib": run.rss_idle / (1 << 20),
        "server_cpu_s": run.server_cpu_s,
        "client_cpu_s": run.client_cpu_s,
        "mix": "+".join(MIXES[run.impl]),
        "errors": {k: v for r in reports for k, v in r["errors"].items()},
    }


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

"""`wirelab bench notify`: the same jobs followed over every transport, and what each one costs.

Theory of operation: one `wirelab up` child process serves every run. For each transport in turn,
the bench submits `jobs` demo jobs at once (straight to the server) and follows each with its own
client from `wirelab.clients` through a `CountingRelay`, so requests, TCP connections and bytes
both ways are counted on the wire. The server's CPU seconds (psutil, user + system) are read before
and after each transport's run; they include running the jobs themselves, which is the same work
for every transport, so the differences between rows are what the transports cost.

Latency is how long a notification took, counted per event published while the client followed:
from the snapshot's `updated_at` (the server's wall clock when that version was published) to the
client's wall clock when it first held that version or a newer one (one machine, one clock). After
each run the bench replays every job's versions over SSE, straight from the server and outside the
measured window, to know every event, including those a poller skipped. Clients follow from the
version their submission returned, as a real client that just created a job would.

"get" is plain request/response: the client asks once when it expects the job to be done (after
steps x step_ms) and again every interval until it sees `done`; only that final answer is a
notification. "short" asks every interval from the start, so its requests grow with the job's
length and its latency averages half an interval; "long" costs one request per notification; SSE and
WebSocket keep one connection per client and are told at once.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from wirelab.bench import runner
from wirelab.bench.relay import CountingRelay
from wirelab.bench.report import Column, cpu_seconds, percentile, print_table, write_json
from wirelab.clients import TRANSPORTS, Follower, JobsClient, SSEFollower, Update, follower_for
from wirelab.testing import ServerProcess

__all__ = ["NotifyPlan", "Outcome", "latencies_ms", "measure", "published_at", "run_notify", "summary"]

COLUMNS = (
    Column("transport", "transport"),
    Column("requests", "requests", ","),
    Column("connections", "connections", ","),
    Column("updates", "updates", ","),
    Column("bytes_up", "bytes up", ","),
    Column("bytes_down", "bytes down", ","),
    Column("latency_p50_ms", "p50 ms", ".1f"),
    Column("latency_p99_ms", "p99 ms", ".1f"),
    Column("cpu_s", "server CPU s", ".3f"),
)


@dataclass(frozen=True, slots=True)
class NotifyPlan:
    jobs: int = 5
    steps: int = 20
    step_ms: int = 100
    interval: float = 0.5
    transports: tuple[str, ...] = TRANSPORTS
    wait: float = 30.0

    @property
    def job_s(self) -> float:
        return self.steps * self.step_ms / 1000

    @property
    def spec(self) -> dict[str, Any]:
        return {"kind": "demo", "steps": self.steps, "step_ms": self.step_ms}


Stamped = tuple[Update, float]


@dataclass
class Outcome:
    """What one client saw while following one job: each update with the wall time it arrived."""

    topic: str
    started: float
    requests: int = 0
    stamped: list[Stamped] = field(default_factory=list)


def published_at(update: Update) -> float:
    """The snapshot's `updated_at` (ISO 8601, UTC, "Z") as seconds since the epoch."""
    return datetime.fromisoformat(update.data["updated_at"]).timestamp()


def latencies_ms(outcome: Outcome, history: Sequence[Update], *, final_only: bool) -> list[float]:
    """For each event published while the client followed: how long until it saw that or newer.

    Counting per published event, not per update received, is what makes polling honest: a short
    poll that skipped three versions told its client about each of them late, not about none.
    """
    delays = []
    for event in history:
        published = published_at(event)
        if published < outcome.started or (final_only and not event.final):
            continue
        seen = [at for update, at in outcome.stamped if update.version >= event.version]
        if seen:
            delays.append((min(seen) - published) * 1000)
    return delays


async def _follow(via: str, url: str, plan: NotifyPlan, snapshot: dict[str, Any]) -> Outcome:
    follower = follower_for(via, url, interval=plan.interval, wait=plan.wait)
    outcome = Outcome(f"jobs/{snapshot['id']}", time.time())
    try:
        if via == "get":
            due = time.monotonic() + plan.job_s
            outcome.stamped = await _ask_until_done(follower, outcome.topic, plan, due=due)
        else:
            updates = follower.follow(outcome.topic, after=snapshot["version"])
            outcome.stamped = [(u, time.time()) async for u in updates]
    finally:
        await follower.aclose()
    outcome.requests = follower.requests
    return outcome


async def _ask_until_done(follower: Follower, topic: str, plan: NotifyPlan, *, due: float) -> list[Stamped]:
    """Request/response: ask when the job should be done, then every interval until it is."""
    await asyncio.sleep(max(0.0, due - time.monotonic()))
    while True:
        async for update in follower.follow(topic):
            if update.final:
                return [(update, time.time())]
        await asyncio.sleep(plan.interval)


async def _history(url: str, topic: str) -> list[Update]:
    """Every version of a finished job, replayed over SSE from version 0, straight from the server."""
    replay = SSEFollower(url)
    try:
        return [update async for update in replay.follow(topic, after=0)]
    finally:
        await replay.aclose()


async def _run_transport(
    via: str,
    plan: NotifyPlan,
    relay: CountingRelay,
    server: ServerProcess,
    jobs: JobsClient,
    advance: Callable[[], None],
) -> dict[str, Any]:
    wire, cpu = relay.statistics(), cpu_seconds(server.pid)
    snapshots = await asyncio.gather(*(jobs.submit(plan.spec) for _ in range(plan.jobs)))

    async def follow(snapshot: dict[str, Any]) -> Outcome:
        outcome = await _follow(via, relay.url, plan, snapshot)
        advance()
        return outcome

    outcomes = await asyncio.gather(*(follow(s) for s in snapshots))
    await relay.wait_idle()
    wire, cpu = relay.statistics() - wire, cpu_seconds(server.pid) - cpu
    histories = await asyncio.gather(*(_history(server.url, o.topic) for o in outcomes))
    latencies = [
        x
        for o, h in zip(outcomes, histories, strict=True)
        for x in latencies_ms(o, h, final_only=via == "get")
    ]
    return {
        "transport": via,
        "requests": sum(o.requests for o in outcomes),
        "bytes_up": wire.bytes_up,
        "bytes_down": wire.bytes_down,
        "latency_p50_ms": percentile(latencies, 50),
        "latency_p99_ms": percentile(latencies, 99),
        "cpu_s": round(cpu, 3),
        "connections": wire.connections,
        "updates": sum(len(o.stamped) for o in outcomes),
        "notifications": len(latencies),
        "jobs": plan.jobs,
    }


async def measure(plan: NotifyPlan, server: ServerProcess, progress: Progress) -> list[dict[str, Any]]:
    """One row per transport, run one after the other against the same server."""
    jobs = JobsClient(server.url)
    rows = []
    try:
        async with CountingRelay(server.port) as relay:
            for via in plan.transports:
                task = progress.add_task(f"{via}: jobs followed", total=plan.jobs)
                advance = functools.partial(progress.advance, task)
                rows.append(await _run_transport(via, plan, relay, server, jobs, advance))
    finally:
        await jobs.aclose()
    return rows


def run_notify(plan: NotifyPlan, *, json_path: Path | None, console: Console, progress: Progress) -> int:
    """Start the server, measure every transport, print the table; the exit status."""
    data_dir = Path(tempfile.mkdtemp(prefix="wirelab-notify-"))
    workers = str(max(4, plan.jobs))  # every job runs at once, or queueing would blur the latency
    try:
        with progress, ServerProcess(data_dir, "--workers", workers, "--log-level", "warning") as server:
            rows = runner.run(measure(plan, server, progress))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    title = f"{plan.jobs} jobs of {plan.steps} x {plan.step_ms} ms, short polls every {plan.interval:g} s"
    print_table(console, title, COLUMNS, rows)
    for line in summary(plan, rows):
        console.print(line)
    if json_path is not None:
        write_json(json_path, "notify", rows, plan=_plan_json(plan))
    return 0


def _plan_json(plan: NotifyPlan) -> dict[str, Any]:
    return {"jobs": plan.jobs, "steps": plan.steps, "step_ms": plan.step_ms, "interval_s": plan.interval}


def summary(plan: NotifyPlan, rows: Sequence[dict[str, Any]]) -> list[str]:
    """The relations the table should show, computed from it (never asserted)."""
    by = {row["transport"]: row for row in rows}
    lines = []
    if "short" in by:
        short = by["short"]
        lines.append(
            f"short polling: {short['requests'] / plan.jobs:.1f} requests per job "
            f"(job time / interval = {plan.job_s / plan.interval:.1f}), "
            f"p50 {_ms(short['latency_p50_ms'])} (interval / 2 = {plan.interval * 500:.0f} ms)"
        )
    if "long" in by and by["long"]["updates"]:
        long = by["long"]
        lines.append(f"long polling: {long['requests'] / long['updates']:.2f} requests per notification")
    for via, name in (("sse", "SSE"), ("ws", "WebSocket")):
        if via in by:
            lines.append(f"{name}: {by[via]['connections'] / plan.jobs:.1f} connections per client")
    per_update = ", ".join(
        f"{row['transport']} {row['bytes_down'] / row['updates']:,.0f}" for row in rows if row["updates"]
    )
    lines.append(f"bytes down per update: {per_update}")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"

"""`wirelab bench retry`: comments posted through a flaky network, with Idempotency-Keys and without.

Theory of operation: one `wirelab up` process (no pipeline) and, per mode, a `FaultyProxy` in front of
it that loses a share of the responses after the server has committed them. A few workers post
`comments` comments, each to the same post (one fresh post id per mode, so the count is the mode's
own), through the proxy on a fresh connection per request. A client that sees its connection drop
cannot tell whether the comment was stored, so it sends the same request again, up to `max_attempts`
times:

    with-keys       every comment carries one Idempotency-Key, the same on each of its retries: a retry
                    of a comment the server already stored gets the stored response back
                    (`Idempotent-Replayed: true`) and nothing is written twice
    without-keys    the same requests without a key: every lost response becomes a duplicate comment

Afterwards the bench counts what the post holds (GET /comments?post=ID, straight from the server), so
duplicates are stored minus intended. Both modes draw their faults from the same seed, so they meet
the same sequence of decisions. Requests per second counts every attempt over the mode's wall time.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress

from wirelab.bench import runner
from wirelab.bench.faults import FaultSchedule, FaultyProxy
from wirelab.bench.report import Column, print_table, write_json
from wirelab.testing import ServerProcess

__all__ = ["MODES", "RetryPlan", "Tally", "measure", "post_comment", "run_retry", "summary"]

MODES = ("with-keys", "without-keys")
KEYED = "with-keys"
IN_FLIGHT_WAIT_S = 0.05
"""How long a retry waits after a 409 (the first request with its key is still running)."""

COLUMNS = (
    Column("mode", "mode"),
    Column("comments_intended", "intended", ","),
    Column("comments_stored", "stored", ","),
    Column("duplicates", "duplicates", ","),
    Column("retries", "retries", ","),
    Column("faults_injected", "faults", ","),
    Column("replays_seen", "replays", ","),
    Column("requests_per_s", "requests/s", ",.0f"),
)


@dataclass(frozen=True, slots=True)
class RetryPlan:
    comments: int = 1000
    fault_rate: float = 0.2
    concurrency: int = 8
    max_attempts: int = 10
    seed: int = 1


@dataclass
class Tally:
    """What the clients of one mode did and saw."""

    requests: int = 0
    retries: int = 0
    replays: int = 0
    in_flight: int = 0
    gave_up: int = 0


async def post_comment(
    client: httpx.AsyncClient, body: dict[str, str], *, key: str | None, max_attempts: int, tally: Tally
) -> bool:
    """POST one comment until an answer arrives: False if every attempt was lost.

    A dropped connection is retried at once with the same request (and the same key); a 409 (the key's
    first request is still running) a moment later. Any other refusal is a bug, raised.
    """
    headers = {"idempotency-key": key} if key is not None else {}
    for attempt in range(max_attempts):
        if attempt:
            tally.retries += 1
        tally.requests += 1
        try:
            response = await client.post("/comments", json=body, headers=headers)
        except httpx.TransportError:
            continue
        if response.status_code == 409:
            tally.in_flight += 1
            await asyncio.sleep(IN_FLIGHT_WAIT_S)
            continue
        response.raise_for_status()
        if response.headers.get("idempotent-replayed") == "true":
            tally.replays += 1
        return True
    tally.gave_up += 1
    return False


async def _post_all(
    client: httpx.AsyncClient,
    mode: str,
    post: str,
    plan: RetryPlan,
    tally: Tally,
    advance: Callable[[], None],
) -> None:
    """`plan.concurrency` workers sharing one iterator of comment numbers."""
    numbers = iter(range(plan.comments))

    async def worker(numbers: Iterator[int]) -> None:
        for n in numbers:
            key = str(uuid.uuid4()) if mode == KEYED else None
            body = {"post": post, "text": f"comment {n}"}
            await post_comment(client, body, key=key, max_attempts=plan.max_attempts, tally=tally)
            advance()

    async with asyncio.TaskGroup() as group:
        for _ in range(min(plan.concurrency, plan.comments)):
            group.create_task(worker(numbers))


def _one_request_per_connection(url: str) -> httpx.AsyncClient:
    """`Connection: close` on every request: the server closes once it has answered, which is how the
    proxy knows where a response ends."""
    return httpx.AsyncClient(
        base_url=url,
        headers={"connection": "close"},
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=30,
    )


async def _stored(url: str, post: str) -> int:
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/comments", params={"post": post})
        response.raise_for_status()
        return int(response.json()["count"])


async def measure(mode: str, plan: RetryPlan, server: ServerProcess, progress: Progress) -> dict[str, Any]:
    """Post every comment of one mode through a fresh faulty proxy, then count what was stored; one row."""
    post = f"retry-{mode}-{uuid.uuid4().hex[:12]}"
    task = progress.add_task(f"{mode}: comments", total=plan.comments)
    tally = Tally()
    schedule = FaultSchedule(plan.fault_rate, seed=plan.seed)
    async with FaultyProxy(server.port, schedule) as proxy:
        async with _one_request_per_connection(proxy.url) as client:
            started = time.perf_counter()
            await _post_all(client, mode, post, plan, tally, lambda: progress.advance(task))
            seconds = time.perf_counter() - started
        await proxy.wait_idle()
    stored = await _stored(server.url, post)
    faults = schedule.statistics()
    return {
        "mode": mode,
        "idempotency_keys": mode == KEYED,
        "comments_intended": plan.comments,
        "comments_stored": stored,
        "duplicates": stored - plan.comments,
        "retries": tally.retries,
        "faults_injected": faults.cut,
        "replays_seen": tally.replays,
        "requests": tally.requests,
        "requests_per_s": tally.requests / seconds,
        "seconds": seconds,
        "responses_delivered": faults.delivered,
        "in_flight_409": tally.in_flight,
        "gave_up": tally.gave_up,
        "post": post,
    }


async def _measure_all(plan: RetryPlan, server: ServerProcess, progress: Progress) -> list[dict[str, Any]]:
    return [await measure(mode, plan, server, progress) for mode in MODES]


def run_retry(plan: RetryPlan, *, json_path: Path | None, console: Console, progress: Progress) -> int:
    """Start the server, post through the faults in both modes, print the table; the exit status."""
    data_dir = Path(tempfile.mkdtemp(prefix="wirelab-retry-"))
    try:
        with progress, ServerProcess(data_dir, "--no-pipeline", "--log-level", "warning") as server:
            rows = runner.run(_measure_all(plan, server, progress))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    title = (
        f"{plan.comments:,} comments, {plan.fault_rate:.0%} of responses lost after the commit, "
        f"up to {plan.max_attempts} attempts each"
    )
    print_table(console, title, COLUMNS, rows)
    for line in summary(rows):
        console.print(line)
    if json_path is not None:
        write_json(json_path, "retry", rows, plan=_plan_json(plan))
    keyed = next(row for row in rows if row["mode"] == KEYED)
    return 0 if keyed["comments_stored"] == keyed["comments_intended"] else 1


def _plan_json(plan: RetryPlan) -> dict[str, Any]:
    return {
        "comments": plan.comments,
        "fault_rate": plan.fault_rate,
        "concurrency": plan.concurrency,
        "max_attempts": plan.max_attempts,
        "seed": plan.seed,
    }


def summary(rows: Sequence[dict[str, Any]]) -> list[str]:
    """What the table shows, in words, computed from it."""
    lines = []
    for row in rows:
        lost = row["faults_injected"]
        if row["idempotency_keys"]:
            outcome = f"{row['replays_seen']:,} replayed, {row['duplicates']:,} duplicates"
        else:
            share = row["duplicates"] / row["comments_intended"]
            outcome = f"{row['duplicates']:,} duplicates ({share:.1%} of the comments)"
        gave_up = f", {row['gave_up']:,} given up" if row["gave_up"] else ""
        lines.append(f"{row['mode']}: {lost:,} lost responses -> {outcome}{gave_up}")
    return lines

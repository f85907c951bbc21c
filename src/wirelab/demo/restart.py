"""`wirelab demo restart`: restart a stateful service and a stateless one under a busy client.

Theory of operation: the same event, a restart (SIGTERM, then start again on the same port), hits two
designs, and the demo measures what the client lived through rather than asserting it.

1. Stateful: the counter service (wirelab.demo.counter) keeps each connection's count in its memory.
   The client counts up, the service restarts, the client's next request fails on its dead connection,
   and after reconnecting its count starts over: the state died with the process.
2. Stateless: `wirelab up` keeps everything in its SQLite store. The client follows a job over SSE and
   posts comments, each with its own Idempotency-Key, while the server restarts. The SSE client resumes
   by Last-Event-ID; a post that failed is sent again with the SAME key until it is answered, so a post
   that was stored but whose answer was lost is replayed, not stored twice. Measured: the versions
   received (no gap, no repeat), the reconnects, and the comments intended against those stored.

Every actor is a real child process on loopback; whatever happens, they are killed before we return.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from wirelab.clients import JobsClient, SSEFollower
from wirelab.clients.jobs import checked, raise_for_problem
from wirelab.testing import ServerProcess, free_port

__all__ = ["RestartPlan", "StatefulOutcome", "StatelessOutcome", "run_restart"]

HOST = "127.0.0.1"
START_TIMEOUT_S = 10.0
POST_DEADLINE_S = 20.0
"""How long one comment is retried (with its key) before the demo gives up on the server."""


@dataclass(frozen=True, slots=True)
class RestartPlan:
    increments: int = 5
    """INCR requests on the counter before its restart."""
    comments: int = 20
    """Comments posted to the stateless server, a third before the restart and the rest across it."""
    steps: int = 40
    step_ms: int = 100
    """The followed demo job: long enough to be running when the server restarts."""
    interval_s: float = 0.1
    """Pause between two comments."""


@dataclass(frozen=True, slots=True)
class StatefulOutcome:
    increments_before: int
    count_before: int
    error: str
    error_type: str
    count_after_reconnect: int
    restart_s: float

    @property
    def state_lost(self) -> bool:
        return self.count_after_reconnect != self.count_before + 1

    def row(self) -> dict[str, Any]:
        return {"experiment": "stateful", **asdict(self), "state_lost": self.state_lost}


@dataclass(frozen=True, slots=True)
class StatelessOutcome:
    versions: tuple[int, ...]
    final_state: str | None
    version_at_restart: int
    sse_reconnects: int
    comments_intended: int
    comments_before_restart: int
    comments_stored: int
    comment_duplicates: int
    comments_missing: int
    post_retries: int
    posts_replayed: int
    restart_s: float

    @property
    def version_gaps(self) -> int:
        return len(set(range(1, max(self.versions, default=0) + 1)) - set(self.versions))

    @property
    def version_repeats(self) -> int:
        return len(self.versions) - len(set(self.versions))

    @property
    def intact(self) -> bool:
        comments_ok = self.comments_stored == self.comments_intended and not self.comment_duplicates
        versions_ok = not self.version_gaps and not self.version_repeats and self.final_state == "done"
        return comments_ok and versions_ok and not self.comments_missing

    def row(self) -> dict[str, Any]:
        figures = {k: v for k, v in asdict(self).items() if k != "versions"}
        return {
            "experiment": "stateless",
            "versions_received": len(self.versions),
            "last_version": max(self.versions, default=0),
            "version_gaps": self.version_gaps,
            "version_repeats": self.version_repeats,
            **figures,
            "intact": self.intact,
        }


def run_restart(plan: RestartPlan, *, console: Console, json_path: Path | None = None) -> int:
    """Run both experiments, print the table (and write `json_path`); 0 when each behaved as designed."""
    with tempfile.TemporaryDirectory(prefix="wirelab-demo-") as tmp:
        counter = CounterProcess(free_port())
        server = ServerProcess(Path(tmp) / "data", log_path=Path(tmp) / "server.log")
        try:
            stateful, stateless = asyncio.run(_both(plan, console, counter, server))
        finally:
            counter.kill()
            server.kill()
    print_outcomes(console, stateful, stateless)
    if json_path is not None:
        rows = [stateful.row(), stateless.row()]
        document = {"demo": "restart", "plan": asdict(plan), "rows": rows}
        json_path.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if stateful.state_lost and stateless.intact else 1


async def _both(
    plan: RestartPlan, console: Console, counter: CounterProcess, server: ServerProcess
) -> tuple[StatefulOutcome, StatelessOutcome]:
    console.rule("1. stateful: a counter kept in the service's memory")
    stateful = await run_stateful(plan, counter, _narrator(console, "stateful"))
    console.rule("2. stateless: wirelab up, its state in SQLite")
    stateless = await run_stateless(plan, server, _narrator(console, "stateless"))
    return stateful, stateless


def _narrator(console: Console, name: str) -> Callable[[str], None]:
    def say(text: str) -> None:
        console.print(f"[bold]{name:>9}[/] │ {escape(text)}")

    return say


# 1. Stateful


class CounterProcess:
    """`python -m wirelab.demo.counter` as a child process, started and stopped like a user would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        return self._process.pid if self._process is not None else 0

    async def start(self) -> None:
        """Start it and wait until it accepts connections."""
        process = await asyncio.to_thread(self._spawn)
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                while process.poll() is None:
                    try:
                        _, writer = await asyncio.open_connection(HOST, self.port)
                    except OSError:
                        await asyncio.sleep(0.02)
                        continue
                    writer.close()
                    return
        except TimeoutError:
            pass
        self.kill()
        raise RuntimeError(f"the counter service did not listen on port {self.port}")

    def _spawn(self) -> subprocess.Popen[bytes]:
        """Kept on self before anything can interrupt us, so that kill() always finds it."""
        command = [sys.executable, "-m", "wirelab.demo.counter", "--port", str(self.port)]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        return self._process

    async def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            await asyncio.to_thread(self._process.wait, 10)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()


async def run_stateful(
    plan: RestartPlan, counter: CounterProcess, say: Callable[[str], None]
) -> StatefulOutcome:
    await counter.start()
    say(f"counter service on port {counter.port} (pid {counter.pid}): each connection's count in memory")
    reader, writer = await asyncio.open_connection(HOST, counter.port)
    counts = [await _incr(reader, writer) for _ in range(plan.increments)]
    say(f"client: {plan.increments} x INCR -> {', '.join(map(str, counts))}")
    started = time.monotonic()
    await counter.stop()
    await counter.start()
    restart_s = time.monotonic() - started
    say(f"restart: SIGTERM, then started again (pid {counter.pid}) in {restart_s:.2f} s")
    try:
        count = await _incr(reader, writer)
        error, error_type = f"none: the old connection answered {count}", "none"
    except (OSError, asyncio.IncompleteReadError) as exc:
        error, error_type = _describe(exc), type(exc).__name__
    writer.close()
    say(f"client: INCR on its old connection -> {error}")
    reader, writer = await asyncio.open_connection(HOST, counter.port)
    after = await _incr(reader, writer)
    writer.close()
    say(f"client: reconnected, INCR -> {after}: the count started over, the state died with the process")
    await counter.stop()
    return StatefulOutcome(plan.increments, counts[-1], error, error_type, after, round(restart_s, 3))


async def _incr(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    writer.write(b"INCR\n")
    await writer.drain()
    return int(await reader.readuntil(b"\n"))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "EOF: the server had closed the connection"
    if isinstance(exc, ConnectionResetError):
        return "connection reset by peer"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe: the server had closed the connection"
    return f"{type(exc).__name__}: {exc}"


# 2. Stateless


class CommentPoster:
    """Posts comments one by one; a failed post is retried with the same Idempotency-Key until answered."""

    def __init__(self, http: httpx.AsyncClient, post: str, *, count: int, interval_s: float) -> None:
        self.post = post
        self.texts = [f"comment {i + 1} of {count}" for i in range(count)]
        self.answered: list[dict[str, Any]] = []
        self.third_in = asyncio.Event()
        """Set once a third of the comments are stored: time to restart the server under the rest."""
        self.retries = 0
        self.replayed = 0
        self._http = http
        self._interval_s = interval_s

    async def run(self) -> None:
        for text in self.texts:
            await self._post(text, key=uuid.uuid4().hex)
            await asyncio.sleep(self._interval_s)

    async def _post(self, text: str, *, key: str) -> None:
        deadline = time.monotonic() + POST_DEADLINE_S
        body, headers = {"post": self.post, "text": text}, {"idempotency-key": key}
        while True:
            try:
                response: httpx.Response | None = await self._http.post(
                    "/comments", json=body, headers=headers
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.is_success:
                self.answered.append(response.json())
                if len(self.answered) >= len(self.texts) // 3:
                    self.third_in.set()
                self.replayed += response.headers.get("idempotent-replayed") == "true"
                return
            if response is not None and response.status_code < 500 and response.status_code != 409:
                raise_for_problem(response)  # a refusal that no retry can change
            if time.monotonic() > deadline:
                raise ConnectionError(f"no answer to {text!r} within {POST_DEADLINE_S}s")
            self.retries += 1
            await asyncio.sleep(_retry_after(response))


def _retry_after(response: httpx.Response | None) -> float:
    """409 (the first try is still in flight) says when with Retry-After; otherwise retry soon."""
    raw = response.headers.get("retry-after", "") if response is not None else ""
    return min(float(raw), 1.0) if raw.isdigit() else 0.1


async def run_stateless(
    plan: RestartPlan, server: ServerProcess, say: Callable[[str], None]
) -> StatelessOutcome:
    await asyncio.to_thread(server.start)
    say(f"wirelab up on {server.url} (pid {server.pid}), SQLite store in {server.data_dir}")
    jobs, follower = JobsClient(server.url), SSEFollower(server.url)
    http = httpx.AsyncClient(base_url=server.url, timeout=5)
    try:
        job = await jobs.submit({"kind": "demo", "steps": plan.steps, "step_ms": plan.step_ms})
        poster = CommentPoster(
            http, f"demo-{uuid.uuid4().hex[:8]}", count=plan.comments, interval_s=plan.interval_s
        )
        say(f"client: follows job {job['id']} over SSE and posts {plan.comments} comments on {poster.post}")
        versions: list[int] = []
        running = asyncio.Event()
        async with asyncio.timeout(60), asyncio.TaskGroup() as group:
            following = group.create_task(_follow(follower, job["id"], versions, running))
            group.create_task(poster.run())
            restart = group.create_task(_restart_when_busy(server, versions, running, poster, say))
        final, (at_version, posted, restart_s) = following.result(), restart.result()
        say(
            f"client: SSE reconnected {follower.reconnects} time(s) with Last-Event-ID; got versions "
            f"{versions[0]}..{versions[-1]}, the job {final}"
        )
        say(
            f"client: {poster.retries} failed post(s) sent again with their key, {poster.replayed} replayed"
        )
        stored = checked(await http.get("/comments", params={"post": poster.post}))
    finally:
        await asyncio.gather(jobs.aclose(), follower.aclose(), http.aclose())
    texts = Counter(comment["text"] for comment in stored["comments"])
    say(f"server: {stored['count']} comment(s) stored for {plan.comments} intended")
    await asyncio.to_thread(server.stop)
    return StatelessOutcome(
        versions=tuple(versions),
        final_state=final,
        version_at_restart=at_version,
        sse_reconnects=follower.reconnects,
        comments_intended=plan.comments,
        comments_before_restart=posted,
        comments_stored=stored["count"],
        comment_duplicates=sum(n - 1 for n in texts.values()),
        comments_missing=sum(1 for text in poster.texts if text not in texts),
        post_retries=poster.retries,
        posts_replayed=poster.replayed,
        restart_s=round(restart_s, 3),
    )


async def _follow(
    follower: SSEFollower, job_id: str, versions: list[int], running: asyncio.Event
) -> str | None:
    """Every version of the job from the first, through reconnects; the final event's name.
    `running` is set at the third version: the job is under way."""
    final = None
    async for update in follower.follow(f"jobs/{job_id}", after=0):
        versions.append(update.version)
        final = update.event
        if len(versions) >= 3:
            running.set()
    return final


async def _restart_when_busy(
    server: ServerProcess,
    versions: list[int],
    running: asyncio.Event,
    poster: CommentPoster,
    say: Callable[[str], None],
) -> tuple[int, int, float]:
    """Once the job is running and a third of the comments are in, SIGTERM and start again."""
    await asyncio.gather(running.wait(), poster.third_in.wait())
    at_version, posted = versions[-1], len(poster.answered)
    started = time.monotonic()
    status = await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    restart_s = time.monotonic() - started
    say(
        f"restart at version {at_version}, {posted} comment(s) in: SIGTERM (exit {status}), "
        f"started again (pid {server.pid}) on the same port and data in {restart_s:.2f} s"
    )
    return at_version, posted, restart_s


# The report


def print_outcomes(console: Console, stateful: StatefulOutcome, stateless: StatelessOutcome) -> None:
    table = Table(title="wirelab demo restart: one restart, two designs", title_justify="left")
    table.add_column("")
    table.add_column("stateful: TCP counter, state in memory")
    table.add_column("stateless: wirelab up, state in SQLite")
    s, t = stateful, stateless
    rows: list[tuple[str, str | Text, str | Text]] = [
        ("before the restart", f"{s.increments_before} x INCR, count {s.count_before}",
         f"job at version {t.version_at_restart}, {t.comments_before_restart} comment(s) stored"),
        ("restart (SIGTERM + start)", f"{s.restart_s:.2f} s", f"{t.restart_s:.2f} s"),
        ("what the client saw", s.error,
         f"the stream ended; {t.post_retries} post(s) failed and were retried with their key"),
        ("how it recovered", "reconnected",
         f"{t.sse_reconnects} SSE reconnect(s), resumed by Last-Event-ID; {t.posts_replayed} replay(s)"),
        ("after the restart", f"count {s.count_after_reconnect} on a new connection",
         f"versions 1..{max(t.versions, default=0)}: "
         f"{t.version_gaps} gap(s), {t.version_repeats} repeat(s)"),
        ("comments intended / stored", "-",
         f"{t.comments_intended} / {t.comments_stored}: {t.comment_duplicates} duplicate(s), "
         f"{t.comments_missing} missing"),
        ("verdict", Text("state lost", "red") if s.state_lost else Text("state kept", "green"),
         Text("nothing lost, nothing doubled", "green") if t.intact else Text("lost or doubled", "red")),
    ]  # fmt: skip
    for name, left, right in rows:
        table.add_row(
            name,
            Text(left) if isinstance(left, str) else left,
            Text(right) if isinstance(right, str) else right,
        )
    console.print(table)

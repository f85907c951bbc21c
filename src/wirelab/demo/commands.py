"""The `wirelab demo` command group: options and help here, the experiments in their own modules.

Only click is imported at module level, so `wirelab demo --help` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["demo"]


@click.group()
def demo() -> None:
    """Experiments that narrate a pattern step by step, then print what they measured."""


@demo.command()
@click.option(
    "--increments",
    default=5,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="INCR requests on the stateful counter before it restarts.",
)
@click.option(
    "--comments",
    default=20,
    show_default=True,
    type=click.IntRange(3, 500),
    help="Comments posted to the stateless server; a third before the restart, the rest across it.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help='Also write {"demo", "plan", "rows"} to this file, one row per experiment.',
)
def restart(increments: int, comments: int, json_path: Path | None) -> None:
    """Restart a stateful service and a stateless one under a busy client, and show what each lost.

    \b
    1. stateful: a tiny TCP service keeps a counter per connection in its memory. The client counts
       up, the service restarts (SIGTERM, start again): its next request fails, and after
       reconnecting its count starts over from 1. The state died with the process.
    2. stateless: `wirelab up` keeps its state in SQLite. The client follows a job over SSE and posts
       comments with Idempotency-Key headers while the server restarts on the same port and data.
       SSE resumes by Last-Event-ID; a failed post is retried with the SAME key. Measured: the job's
       versions (no gap, no repeat) and the comments intended against those stored.

    Everything runs as child processes on loopback in a temporary directory, in about 5 s.
    Exit status: 0 when the stateful service lost its state and the stateless one lost and doubled
    nothing, 1 otherwise, 130 on Ctrl-C (every child process is stopped first).
    """
    from rich.console import Console

    from wirelab.demo.restart import RestartPlan, run_restart

    console = Console() if sys.stdout.isatty() else Console(width=140)
    plan = RestartPlan(increments=increments, comments=comments)
    try:
        status = run_restart(plan, console=console, json_path=json_path)
    except KeyboardInterrupt:
        console.print("interrupted: every child process was stopped")
        sys.exit(130)
    sys.exit(status)


@demo.command()
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help='Also write {"demo", "rows"} to this file, one row per credential.',
)
def auth(json_path: Path | None) -> None:
    """A server-side session against a signed token (JWT), on two instances and across a restart.

    Two `wirelab up` processes share WIRELAB_JWT_SECRET (a random one if unset). The client logs in on
    A both ways, then asks GET /whoami on A, on B, and on A after A restarted: the session works only
    on A and not after its restart; the token works everywhere. Also times one whoami each way.
    Exit status: 0 when each behaved as designed, 1 otherwise.
    """
    from rich.console import Console

    from wirelab.demo.auth import run_auth

    console = Console() if sys.stdout.isatty() else Console(width=140)
    sys.exit(run_auth(console=console, json_path=json_path))

"""Follow a job to its end with a progress bar; the CLI's `watch` and `submit --watch` share it."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from wirelab.clients.base import Follower, Update

__all__ = ["watch_job"]


async def watch_job(follower: Follower, job_id: str, *, console: Console) -> Update | None:
    """The last update seen: final when the job ended, else whatever one request/response saw."""
    last: Update | None = None
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%  v{task.fields[version]}  {task.fields[state]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(f"job {job_id}", total=1.0, version="-", state="")
        async for update in follower.follow(f"jobs/{job_id}"):
            last = update
            bar.update(
                task,
                completed=update.data.get("progress", 0.0),
                version=update.version,
                state=update.data.get("state", update.event),
            )
    return last

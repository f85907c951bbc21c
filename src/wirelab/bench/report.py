"""What every bench prints and writes: a rich table for people, a JSON document for machines.

Theory of operation: a scenario produces rows (flat dicts with the unit in each key, as DESIGN.md
asks) and hands them here. The table shows the columns the scenario names, formatted for reading;
the JSON file keeps every key of every row unrounded, plus a description of the machine, because a
figure without the machine it came from cannot be compared with anything. The process-level probes
(server CPU and RSS through psutil, the file-descriptor limit) live here too, since every scenario
measures its servers the same way.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

__all__ = [
    "Column",
    "PeakRss",
    "cpu_seconds",
    "machine_info",
    "percentile",
    "print_table",
    "raise_fd_limit",
    "rss_bytes",
    "stderr_console",
    "write_json",
]

Row = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: the row key it shows, its header, and a format spec for numbers."""

    key: str
    header: str
    spec: str = ""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), interpolating between closest ranks; None when there is no data.

    Interpolation (rather than nearest rank) keeps p50 of two samples at their mean, which matters for
    the small runs tests make; None rather than NaN because NaN is not JSON.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {q}")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def machine_info() -> dict[str, Any]:
    """Enough about the machine to tell whether two result files are comparable."""
    return {
        "cpu_count": os.cpu_count(),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "memory_mib": psutil.virtual_memory().total // (1 << 20),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "load_avg_1m": round(os.getloadavg()[0], 2),  # other work on the box skews every figure
    }


def write_json(path: Path, scenario: str, rows: Sequence[Row], **extra: Any) -> None:
    document = {"scenario": scenario, "machine": machine_info(), **extra, "rows": list(rows)}
    path.write_text(json.dumps(document, indent=2) + "\n")


def print_table(console: Console, title: str, columns: Sequence[Column], rows: Sequence[Row]) -> None:
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column.header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(_cell(row.get(c.key), c.spec) for c in columns))
    console.print(table)


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float) and spec:
        return format(value, spec)
    return str(value)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used so far (children excluded)."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of the process and of its live children: a server that works in worker processes
    (nginx's master does nothing itself) is measured by all of them."""
    process = psutil.Process(pid)
    return sum(cpu_seconds(p.pid) for p in [process, *process.children(recursive=True)])


def rss_bytes(pid: int) -> int:
    return int(psutil.Process(pid).memory_info().rss)


class PeakRss:
    """The highest RSS a process reaches while the block runs, sampled every `interval_s`.

    Sampled from a thread, so a busy event loop in the bench does not thin the samples out exactly
    when the server is busiest; a buffer the server holds for a few milliseconds still shows.
    """

    def __init__(self, pid: int, *, interval_s: float = 0.005) -> None:
        self._process = psutil.Process(pid)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.before = self.peak = 0

    def __enter__(self) -> PeakRss:
        self.before = self.peak = int(self._process.memory_info().rss)
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self.peak = max(self.peak, int(self._process.memory_info().rss))
            except psutil.Error:
                return  # the process is gone; what was seen stands


def raise_fd_limit() -> int:
    """Raise our soft RLIMIT_NOFILE to the hard limit; child processes inherit it.

    Thousands of sockets need thousands of descriptors, and we cannot change how the server under
    test starts, so the bench raises the limit in itself before it spawns anything.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def stderr_console() -> Console:
    """Progress goes to stderr so that stdout stays clean for the table (and for pipes)."""
    return Console(stderr=True, file=sys.stderr)

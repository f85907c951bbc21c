"""The layer 7 loads of `wirelab bench lb`: nginx as the backend, wrk for the maximum, a paced client
for latency.

Theory of operation: nginx (`worker_processes 1`, `return 200 "ok"`, no access log) answers far faster
than any balancer in front of it, so it is not what a figure measures. wrk with keep-alive
connections gives the most requests/s each front sustains. Latency at that maximum is mostly
queueing, so added latency is measured apart, at one fixed rate below every maximum: wrk has no
fixed-rate mode, hence `paced_latency_ms`, which schedules requests at `rate` per second over a few
keep-alive connections and times each from its scheduled instant, not from when it was sent, so a
stalled front is charged for the requests that waited behind it (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from wirelab.bench.report import percentile
from wirelab.errors import ProtocolError
from wirelab.net.loop import runner
from wirelab.proto.http1 import EndOfMessage, Response, ResponseParser

__all__ = [
    "PacedTally",
    "h2load_req_per_s",
    "nginx_config",
    "nginx_temp_paths",
    "paced_latency_ms",
    "parse_wrk",
    "run_load",
    "wrk_req_per_s",
]

WRK_CONNECTIONS = 50
H2_CONNECTIONS = 10
H2_STREAMS = 10
"""h2load's HTTP/2 load: this many connections, each with this many requests in flight."""
PACED_CONNECTIONS = 8
_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def nginx_config(port: int, workdir: Path, *, h2c_port: int | None = None) -> str:
    """One worker answering `ok` to everything on loopback, over HTTP/1.1 on `port` and, given
    `h2c_port`, over HTTP/2 in clear there too; its pid, log and temp files in `workdir`."""
    temp = nginx_temp_paths(workdir)
    h2c = (
        f"    server {{\n        listen 127.0.0.1:{h2c_port} http2;\n"
        '        location / { return 200 "ok"; }\n    }\n'
        if h2c_port is not None
        else ""
    )
    return (
        f"daemon off;\nworker_processes 1;\npid {workdir}/nginx.pid;\n"
        f"error_log {workdir}/nginx-error.log warn;\n"
        "events { worker_connections 4096; }\n"
        f"http {{\n    access_log off;\n    keepalive_requests 1000000;\n{temp}"
        f"    server {{\n        listen 127.0.0.1:{port};\n"
        f'        location / {{ return 200 "ok"; }}\n    }}\n{h2c}}}\n'
    )


_NGINX_TEMPS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_temp_paths(workdir: Path) -> str:
    """The http block's temp-path lines, all in `workdir`: an unprivileged nginx cannot use /var/lib."""
    return "".join(f"    {kind}_temp_path {workdir}/nginx-{kind};\n" for kind in _NGINX_TEMPS)


def nginx_command(config: Path, workdir: Path) -> list[str]:
    return ["nginx", "-e", str(workdir / "nginx-error.log"), "-p", str(workdir), "-c", str(config)]


def wrk_req_per_s(port: int, duration_s: int) -> tuple[float, int]:
    """One wrk run (one thread, WRK_CONNECTIONS keep-alive connections): requests/s and errors
    (socket errors plus answers other than 2xx/3xx)."""
    command = ["wrk", "-t1", f"-c{WRK_CONNECTIONS}", f"-d{duration_s}s", "--latency"]
    tally = parse_wrk(run_load(command, port, duration_s))
    return tally["req_per_s"], int(tally["errors"])


def parse_wrk(output: str) -> dict[str, float]:
    """Requests/s, p50 and p99 latency (ms, when printed) and errors (socket errors plus answers other
    than 2xx/3xx) from wrk's report."""
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.MULTILINE)
    if rate is None:
        raise RuntimeError(f"wrk printed no rate: {output[-500:]}")
    tally: dict[str, float] = {"req_per_s": float(rate[1])}
    for q in (50, 99):
        found = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
        if found is not None:
            tally[f"latency_p{q}_ms"] = float(found[1]) * _UNITS_MS[found[2]]
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    tally["errors"] = sum(map(int, errors.groups())) if errors else 0
    tally["errors"] += int(bad[1]) if bad else 0
    return tally


def h2load_req_per_s(port: int, duration_s: int) -> tuple[float, int]:
    """One h2load run over h2c (prior knowledge): requests/s and the requests that failed or errored
    (or did not answer 2xx)."""
    command = ["h2load", "-D", str(duration_s), "-c", str(H2_CONNECTIONS), "-m", str(H2_STREAMS)]
    out = run_load(command, port, duration_s)
    rate = re.search(r"finished in [^,]+, ([\d.]+) req/s", out)
    tally = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    codes = re.search(r"status codes: (\d+) 2xx", out)
    if rate is None or tally is None or codes is None:
        raise RuntimeError(f"h2load to port {port} printed no tally: {out[-500:]}")
    # With -D, an answer that lands as the time runs out counts among the status codes but not as
    # done: more 2xx than done is no error.
    return float(rate.group(1)), max(0, int(tally.group(2)) - int(codes.group(1)))


def run_load(command: list[str], port: int, duration_s: int) -> str:
    """Run a load generator against http://127.0.0.1:`port`/ and return what it printed."""
    result = subprocess.run(
        [*command, f"http://127.0.0.1:{port}/"],
        capture_output=True,
        text=True,
        timeout=duration_s + 30,
        check=False,
    )
    if result.returncode != 0:
        tool = command[0]
        raise RuntimeError(f"{tool} to port {port} failed: {result.stdout[-500:]}{result.stderr[-500:]}")
    return result.stdout


@dataclass(frozen=True, slots=True)
class PacedTally:
    """Latencies of the answered requests, in ms from their scheduled instants; failed requests."""

    latencies_ms: tuple[float, ...]
    failed: int

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q) or 0.0


def paced_latency_ms(
    port: int, *, rate: float, duration_s: float, connections: int = PACED_CONNECTIONS
) -> PacedTally:
    """GET / at `rate` requests/s for `duration_s` over `connections` keep-alive connections."""
    with runner() as loop:
        return loop.run(_paced(port, rate, duration_s, connections))


async def _paced(port: int, rate: float, duration_s: float, connections: int) -> PacedTally:
    due: asyncio.Queue[float | None] = asyncio.Queue()
    latencies: list[float] = []
    failed = [0]
    workers = [asyncio.create_task(_worker(port, due, latencies, failed)) for _ in range(connections)]
    start = time.perf_counter()
    total = int(rate * duration_s)
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        due.put_nowait(scheduled)
    for _ in workers:
        due.put_nowait(None)
    await asyncio.gather(*workers)
    return PacedTally(tuple(latencies), failed[0])


async def _worker(
    port: int, due: asyncio.Queue[float | None], latencies: list[float], failed: list[int]
) -> None:
    """One keep-alive connection taking the next due request; reconnects after a failure."""
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter, ResponseParser] | None = None
    while (scheduled := await due.get()) is not None:
        try:
            if conn is None:
                conn = (*await asyncio.open_connection("127.0.0.1", port), ResponseParser())
            conn[1].write(_REQUEST)
            await _read_response(conn[0], conn[2])
            latencies.append((time.perf_counter() - scheduled) * 1000)
        except (OSError, EOFError, ValueError, ProtocolError):
            failed[0] += 1
            if conn is not None:
                conn[1].close()
            conn = None
    if conn is not None:
        conn[1].close()


async def _read_response(reader: asyncio.StreamReader, parser: ResponseParser) -> None:
    """Read one whole answer, which must be a 200, through the lab's own response parser."""
    while True:
        data = await reader.read(65536)
        for event in parser.receive_data(data):
            if isinstance(event, Response) and event.status != 200:
                raise ValueError(f"unexpected answer: {event.status}")
            if isinstance(event, EndOfMessage):
                return
        if not data:
            raise EOFError("the server closed the connection")

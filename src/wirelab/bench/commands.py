"""The `wirelab bench` command group: options and help here, the scenarios in their own modules.

Only click is imported at module level, so `wirelab bench --help` stays instant; each command
imports its scenario (rich, httpx, psutil, websockets...) when it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from wirelab.units import ByteSize, Measure, parse_duration, parse_rate, parse_share

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["bench"]

T = TypeVar("T", int, float)

# Spelled out here rather than imported, since importing the scenarios would slow --help down;
# tests check that they match wirelab.clients.TRANSPORTS, wirelab.bench.fanout.IMPLS,
# wirelab.bench.pubsub.IMPLS, wirelab.bench.lb.IMPLS, wirelab.bench.upload.MODES,
# wirelab.bench.slowloris.IMPLS, wirelab.bench.versions.IMPLS and wirelab.bench.multiplex's MODES
# and SERVERS.
TRANSPORTS = ("get", "short", "long", "sse", "ws")
IMPLS = ("wirelab-mixed", "wirelab-ws", "websockets-broadcast")
PUBSUB_IMPLS = ("embedded", "wirelab-amqp", "wirelab-redis", "aio-pika-bare")
LB_IMPLS = ("wirelab-splice", "wirelab-copy", "haproxy", "direct")
SLOWLORIS_IMPLS = ("wirelab", "nginx", "wirelab-no-deadline")
MULTIPLEX_MODES = ("h1.1 x6", "h1.1 pipelined", "h2", "h3")
MULTIPLEX_SERVERS = ("wirelab", "caddy")
VERSIONS_IMPLS = ("wirelab-uvicorn", "wirelab", "nginx", "caddy")
UPLOAD_MODES = ("single", "tus-1m", "tus-8m", "tus-64m", "tus-parallel-4", "tus-resumed-3")

_JSON_OPTION = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help='Also write {"scenario", "machine", "rows"} to this file.',
)


class _Names(click.ParamType[tuple[str, ...], "str | tuple[str, ...]"]):
    """A comma-separated subset of `allowed`, kept in the order given (so runs go in that order)."""

    name = "list"

    def __init__(self, allowed: tuple[str, ...]) -> None:
        self.allowed = allowed

    def convert(
        self, value: str | tuple[str, ...], param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        names = tuple(n.strip() for n in value.split(",") if n.strip())
        if not names or any(n not in self.allowed for n in names):
            self.fail(f"choose from {', '.join(self.allowed)} (comma-separated), not {value!r}", param, ctx)
        return names


@click.group()
def bench() -> None:
    """Run a pattern beside its peer and print a table of figures and ratios (--json for machines).

    Servers under test run as real child processes on loopback and are measured from outside:
    CPU and memory with psutil, bytes on the wire through a counting relay.
    """


def _counts(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """A comma-separated list of distinct positive integers, in the order given."""
    try:
        counts = tuple(dict.fromkeys(int(n) for n in value.split(",") if n.strip()))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"comma-separated positive integers, not {value!r}")
    return counts


@bench.command()
@click.option("--jobs", default=5, show_default=True, type=click.IntRange(1, 200), help="Jobs run at once.")
@click.option(
    "--steps", default=20, show_default=True, type=click.IntRange(1), help="Progress steps per job."
)
@click.option(
    "--step-ms", default=100, show_default=True, type=click.IntRange(0), help="Milliseconds per step."
)
@click.option(
    "--interval",
    default=0.5,
    show_default=True,
    type=click.FloatRange(0.01),
    help="Seconds between short polls (and between late asks of 'get').",
)
@click.option(
    "--transports",
    default=",".join(TRANSPORTS),
    show_default=True,
    type=_Names(TRANSPORTS),
    help="Comma-separated transports to follow the jobs over.",
)
@_JSON_OPTION
def notify(
    jobs: int,
    steps: int,
    step_ms: int,
    interval: float,
    transports: tuple[str, ...],
    json_path: Path | None,
) -> None:
    """Follow the same jobs over get, short, long, sse and ws, and compare what each costs.

    Per transport: HTTP requests (WebSocket handshakes), TCP connections, bytes up and down counted
    on the wire, notification latency p50/p99 (published -> received) and the server's CPU seconds.
    """
    from wirelab.bench.notify import NotifyPlan, run_notify

    plan = NotifyPlan(jobs=jobs, steps=steps, step_ms=step_ms, interval=interval, transports=transports)
    console, progress = _consoles()
    _exit(lambda: run_notify(plan, json_path=json_path, console=console, progress=progress), console)


@bench.command()
@click.option(
    "--clients", default=10_000, show_default=True, type=click.IntRange(1), help="Idle subscribers."
)
@click.option(
    "--messages", default=5, show_default=True, type=click.IntRange(1), help="Messages sent to all of them."
)
@click.option(
    "--batch", default=500, show_default=True, type=click.IntRange(1), help="Connections opened at once."
)
@click.option(
    "--procs",
    default=2,
    show_default=True,
    type=click.IntRange(1, 16),
    help="Client processes holding the subscribers, so the clients are not the bottleneck.",
)
@click.option(
    "--impls",
    default=",".join(IMPLS),
    show_default=True,
    type=_Names(IMPLS),
    help="Comma-separated implementations to measure; websockets-broadcast is the peer.",
)
@click.option(
    "--timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds to wait for every client to get a message (or to subscribe).",
)
@_JSON_OPTION
def fanout(
    clients: int,
    messages: int,
    batch: int,
    procs: int,
    impls: tuple[str, ...],
    timeout: float,
    json_path: Path | None,
) -> None:
    """Hold N idle subscribers on one server, send them messages, and compare with websockets' broadcast().

    wirelab-mixed: a third each SSE, WebSocket and long polling; wirelab-ws and websockets-broadcast:
    WebSocket only. Reports delivered msg/s, p99 delivery latency and server RSS per idle connection.
    Exit status 1 if any client missed a message.
    """
    from wirelab.bench.fanout import FanoutPlan, run_fanout

    plan = FanoutPlan(
        clients=clients, messages=messages, batch=batch, procs=procs, impls=impls, timeout_s=timeout
    )
    console, progress = _consoles()
    _exit(lambda: run_fanout(plan, json_path=json_path, console=console, progress=progress), console)


@bench.command()
@click.option(
    "--messages",
    default=20_000,
    show_default=True,
    type=click.IntRange(1),
    help="Messages per row on RabbitMQ and Redis.",
)
@click.option(
    "--embedded-messages",
    default=200_000,
    show_default=True,
    type=click.IntRange(1),
    help="Messages per row on the embedded broker (more, since it is fast).",
)
@click.option(
    "--consumers",
    default="1,2,4",
    show_default=True,
    callback=_counts,
    help="Comma-separated consumer counts, one row each; hop latency goes on the 1 row.",
)
@click.option(
    "--impls",
    default=",".join(PUBSUB_IMPLS),
    show_default=True,
    type=_Names(PUBSUB_IMPLS),
    help="Comma-separated implementations; aio-pika-bare is the peer.",
)
@click.option(
    "--hops", default=500, show_default=True, type=click.IntRange(1), help="Hops timed, one at a time."
)
@click.option(
    "--amqp",
    "amqp_url",
    default="amqp://guest:guest@127.0.0.1:5672/",
    show_default=True,
    help="RabbitMQ URL.",
)
@click.option(
    "--redis", "redis_url", default="redis://127.0.0.1:6379/0", show_default=True, help="Redis URL."
)
@_JSON_OPTION
def pubsub(
    messages: int,
    embedded_messages: int,
    consumers: tuple[int, ...],
    impls: tuple[str, ...],
    hops: int,
    amqp_url: str,
    redis_url: str,
    json_path: Path | None,
) -> None:
    """Publish then consume through each broker, beside a bare aio-pika loop on the same RabbitMQ.

    Per implementation and consumer count: publish msg/s (one publisher awaiting each confirmed,
    persistent publish), consume msg/s (the consumers draining and acking what was published),
    and on the 1-consumer row the p50/p99 latency of one hop. An unreachable engine is skipped.
    Exit status 1 if nothing ran or a message was lost or delivered twice.
    """
    from wirelab.bench.pubsub import PubsubPlan, run_pubsub

    plan = PubsubPlan(
        messages=messages,
        embedded_messages=embedded_messages,
        consumers=consumers,
        impls=impls,
        hops=hops,
        amqp_url=amqp_url,
        redis_url=redis_url,
    )
    console, progress = _consoles()
    _exit(lambda: run_pubsub(plan, json_path=json_path, console=console, progress=progress), console)


@bench.command()
@click.option(
    "--size",
    default="256MiB",
    show_default=True,
    type=ByteSize(minimum=1 << 20),
    help="Size of the uploaded image: 256MiB, 8MiB, 1GiB...",
)
@click.option(
    "--modes",
    default=",".join(UPLOAD_MODES),
    show_default=True,
    type=_Names(UPLOAD_MODES),
    help="Comma-separated upload modes; single (one POST /images) is the peer.",
)
@_JSON_OPTION
def upload(size: int, modes: tuple[str, ...], json_path: Path | None) -> None:
    """Upload one big image in one request and by tus (1, 8, 64 MiB chunks, 4 parts in parallel,
    cut off 3 times and resumed), and compare.

    Per mode: goodput MiB/s (to the verified sha256), the server's RSS before and at its peak (sampled
    every 5 ms), its CPU seconds, HTTP requests, the ratio to the single request, and for the resumed
    mode the round trips each resume costs. Exit status 1 if a stored image's sha256 differs.
    """
    from wirelab.bench.upload import UploadPlan, run_upload

    plan = UploadPlan(size=size, modes=modes)
    console, progress = _consoles()
    _exit(lambda: run_upload(plan, json_path=json_path, console=console, progress=progress), console)


@bench.command()
@click.option(
    "--comments", default=1000, show_default=True, type=click.IntRange(1), help="Comments posted per mode."
)
@click.option(
    "--fault-rate",
    default=0.2,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of responses lost after the server committed them.",
)
@click.option(
    "--concurrency",
    default=8,
    show_default=True,
    type=click.IntRange(1, 256),
    help="Clients posting at once.",
)
@click.option(
    "--max-attempts",
    default=10,
    show_default=True,
    type=click.IntRange(1),
    help="Attempts per comment before the client gives up.",
)
@click.option("--seed", default=1, show_default=True, type=int, help="Seed of the fault schedule.")
@_JSON_OPTION
def retry(
    comments: int,
    fault_rate: float,
    concurrency: int,
    max_attempts: int,
    seed: int,
    json_path: Path | None,
) -> None:
    """Post comments through a proxy that drops responses after the commit; clients retry, with
    Idempotency-Keys and without.

    Per mode: comments intended and stored (GET /comments?post=ID), duplicates, retries, faults
    injected, replays seen (Idempotent-Replayed: true) and requests/s. Exit status 1 if with-keys
    stored a comment twice or lost one.
    """
    from wirelab.bench.retry import RetryPlan, run_retry

    plan = RetryPlan(
        comments=comments,
        fault_rate=fault_rate,
        concurrency=concurrency,
        max_attempts=max_attempts,
        seed=seed,
    )
    console, progress = _consoles()
    _exit(lambda: run_retry(plan, json_path=json_path, console=console, progress=progress), console)


@bench.command()
@click.option(
    "--duration",
    default=3,
    show_default=True,
    type=click.IntRange(1, 600),
    help="Seconds of each load (iperf3 bulk, new connections, wrk, paced L7) per implementation.",
)
@click.option(
    "--impls",
    default=",".join(LB_IMPLS),
    show_default=True,
    type=_Names(LB_IMPLS),
    help="Comma-separated implementations; haproxy is the peer, direct the baseline.",
)
@_JSON_OPTION
def lb(duration: int, impls: tuple[str, ...], json_path: Path | None) -> None:
    """Drive `wirelab lb l4` (--splice and --copy), `wirelab lb l7`, HAProxy (mode tcp, mode http)
    and the bare backends with the same load, and compare.

    Per implementation: iperf3 bulk throughput in Gbit/s through the balancer to one iperf3 server,
    new connections/s (connect, one byte echoed, close) against a small echo backend, and HTTP
    requests/s with wrk to nginx answering "ok", then p50/p99 latency at a fixed rate below every
    balancer's maximum; with the ratio of each wirelab row to HAProxy. L7 has one data path, shown on
    the wirelab-splice row. The balancer gets a core of its own. Needs Debian's haproxy, iperf3, wrk
    and nginx.
    """
    from wirelab.bench.lb import LbPlan, missing_peers, run_lb

    missing = missing_peers(impls)
    if missing:
        raise click.ClickException("; ".join(missing))
    plan = LbPlan(duration_s=duration, impls=impls)
    console, progress = _consoles()
    _exit(lambda: run_lb(plan, json_path=json_path, console=console, progress=progress), console)


@bench.command()
@click.option(
    "--duration",
    default=5,
    show_default=True,
    type=click.IntRange(1, 600),
    help="Seconds of wrk per row.",
)
@click.option(
    "--connections",
    default=50,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="wrk's keep-alive HTTP/1.1 connections.",
)
@_JSON_OPTION
def sidecar(duration: int, connections: int, json_path: Path | None) -> None:
    """Drive nginx with wrk straight over HTTP/1.1 (direct-h1) and through `wirelab sidecar`, which
    carries every request over one HTTP/2 connection (sidecar-h2), and compare.

    Per row: requests/s and the ratio to direct, p50/p99 latency, the upstream TCP connections nginx
    saw (from its log), the sidecar's CPU share, and errors. Needs Debian's nginx and wrk.
    Exit status 1 if a row had errors.
    """
    from wirelab.bench.sidecar import SidecarPlan, missing_peers, run_sidecar

    missing = missing_peers()
    if missing:
        raise click.ClickException("; ".join(missing))
    plan = SidecarPlan(duration_s=duration, connections=connections)
    console, progress = _consoles()
    _exit(lambda: run_sidecar(plan, json_path=json_path, console=console, progress=progress), console)


@bench.command()
@click.option(
    "--connections", default=3000, show_default=True, type=click.IntRange(1), help="Slow connections."
)
@click.option(
    "--header-timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="The head deadline given to both servers (wirelab --header-timeout, nginx client_header_timeout).",
)
@click.option(
    "--impls",
    default=",".join(SLOWLORIS_IMPLS),
    show_default=True,
    type=_Names(SLOWLORIS_IMPLS),
    help="Comma-separated servers to flood.",
)
@_JSON_OPTION
def slowloris(
    connections: int, header_timeout: float, impls: tuple[str, ...], json_path: Path | None
) -> None:
    """Flood `wirelab up` and nginx with slow-loris clients (half a request head, then a header line
    a second) while a probe keeps asking GET /healthz, and compare how each holds up.

    Per server: slow connections closed by the server and when the last one was, the probe's
    latency p50/p99 and failures during the flood, and the server's peak RSS. Needs Debian's nginx.
    """
    from wirelab.bench.slowloris import SlowlorisPlan, missing_peers, run_slowloris

    missing = missing_peers() if "nginx" in impls else []
    if missing:
        raise click.ClickException("; ".join(missing))
    plan = SlowlorisPlan(connections=connections, header_timeout_s=header_timeout)
    console, progress = _consoles()
    _exit(
        lambda: run_slowloris(plan, impls, json_path=json_path, console=console, progress=progress), console
    )


@bench.command()
@click.option(
    "--duration", default=5, show_default=True, type=click.IntRange(1, 600), help="Seconds per load."
)
@click.option(
    "--impls",
    default=",".join(VERSIONS_IMPLS),
    show_default=True,
    type=_Names(VERSIONS_IMPLS),
    help="Comma-separated servers: wirelab-uvicorn (the default `wirelab up`), wirelab (`--http 1.1,2,3`), "
    "nginx, caddy.",
)
@_JSON_OPTION
def versions(duration: int, impls: tuple[str, ...], json_path: Path | None) -> None:
    """One small response over every HTTP version on loopback: requests/s and the server's CPU time per
    request, for our servers beside nginx (HTTP/1.1, HTTP/2 over TLS, h2c) and caddy (HTTP/3) in the
    same run, with the ratio of each of our rows to its peer's.

    Loads, all written in C: wrk (HTTP/1.1), h2load (HTTP/2), gtlsclient from ngtcp2 (HTTP/3). Needs
    Debian's wrk, nghttp2-client, ngtcp2-client, nginx and caddy (`make peers`).
    Exit status 1 if a load had errors.
    """
    from wirelab.bench.versions import VersionsPlan, missing_peers, run_versions

    missing = missing_peers(impls)
    if missing:
        raise click.ClickException("; ".join(missing))
    plan = VersionsPlan(duration_s=duration, impls=impls)
    console, progress = _consoles()
    _exit(lambda: run_versions(plan, json_path=json_path, console=console, progress=progress), console)


@bench.command()
@click.option(
    "--delay",
    default="25ms",
    show_default=True,
    type=Measure(parse_duration, "duration"),
    help="One-way delay to set and measure by ping-pong.",
)
@click.option(
    "--pings", default=100, show_default=True, type=click.IntRange(2), help="Round trips per row."
)
@click.option(
    "--rates",
    default="10mbit,100mbit",
    show_default=True,
    callback=lambda ctx, param, value: _listed(value, parse_rate, param),
    help="Comma-separated rates for the bulk copies (tc's units).",
)
@click.option(
    "--bulk-seconds",
    default=3.0,
    show_default=True,
    type=click.FloatRange(0.1, 600),
    help="Each bulk copy carries this many seconds' worth of its rate.",
)
@click.option(
    "--losses",
    default="1%,3%",
    show_default=True,
    callback=lambda ctx, param, value: _listed(value, parse_share, param),
    help="Comma-separated loss shares for the UDP floods (and the namespace's TCP copies).",
)
@click.option(
    "--datagrams", default=20_000, show_default=True, type=click.IntRange(1), help="Datagrams per flood."
)
@click.option(
    "--namespace/--no-namespace",
    default=True,
    show_default=True,
    help="Also measure the kernel's side: nftables loss and the NFQUEUE packet delay (needs root).",
)
@_JSON_OPTION
def impair(
    delay: float,
    pings: int,
    rates: tuple[int, ...],
    bulk_seconds: float,
    losses: tuple[float, ...],
    datagrams: int,
    namespace: bool,
    json_path: Path | None,
) -> None:
    """Set each network impairment and measure it from outside: `wirelab impair`'s proxy (TCP and UDP)
    and, as root, a network namespace's packet loss and packet queue.

    Per row: the one-way delay by ping-pong (half the median round trip) and its error in ms, the
    rate of a bulk TCP copy and its error in %, the share of a paced UDP flood lost and its error in
    points, and in the namespace a TCP copy through the loss with the kernel's retransmissions.
    """
    from wirelab.bench.impair import ImpairPlan, run_impair

    plan = ImpairPlan(
        delay_s=delay,
        pings=pings,
        rates_bps=rates,
        bulk_s=bulk_seconds,
        losses=losses,
        datagrams=datagrams,
        namespace=namespace,
    )
    console, progress = _consoles()
    _exit(lambda: run_impair(plan, json_path=json_path, console=console, progress=progress), console)


def _listed(value: str, parse: Callable[[str], T], param: click.Parameter) -> tuple[T, ...]:
    """A comma-separated list read with one of wirelab.units' parsers."""
    try:
        return tuple(parse(item) for item in value.split(",") if item.strip())
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None


@bench.command()
@click.option(
    "--loss",
    "losses",
    default="0,1,3",
    show_default=True,
    callback=lambda _ctx, param, value: _listed(value, _percent, param),
    help="Comma-separated packet loss, in per cent, one set of rows each.",
)
@click.option(
    "--rtt", default=50.0, show_default=True, type=click.FloatRange(0, 2000), help="Round trip, in ms."
)
@click.option(
    "--repeat", default=10, show_default=True, type=click.IntRange(1, 1000), help="Page loads per row."
)
@click.option(
    "--modes",
    default=",".join(MULTIPLEX_MODES),
    show_default=True,
    type=_Names(MULTIPLEX_MODES),
    help="Comma-separated clients: h1.1 x6 (a browser's pool), h1.1 pipelined, h2, h3.",
)
@click.option(
    "--servers",
    default=",".join(MULTIPLEX_SERVERS),
    show_default=True,
    type=_Names(MULTIPLEX_SERVERS),
    help="Comma-separated servers of the same page: wirelab (`up --http 1.1,2,3`), caddy (Go, quic-go).",
)
@_JSON_OPTION
def multiplex(
    losses: tuple[float, ...],
    rtt: float,
    repeat: int,
    modes: tuple[str, ...],
    servers: tuple[str, ...],
    json_path: Path | None,
) -> None:
    """The gallery (a page and its 102 resources) over HTTP/1.1 on six connections, HTTP/1.1
    pipelined, HTTP/2 and HTTP/3, through a network of our own with RTT ms of round trip and each
    --loss in turn: head-of-line blocking, measured.

    The server (`wirelab up --http 1.1,2,3`) and the clients run in a network namespace made for the
    run, where the kernel holds every packet for half the round trip (NFQUEUE) and drops the given
    share (nftables), so TCP and QUIC recover from loss as they would on a real path. Needs root, ip,
    nft and iptables (`make peers`). Exit status 1 if a page load failed.

    Example: wirelab bench multiplex --loss 0,3 --repeat 5 --json multiplex.json
    """
    from wirelab.bench.multiplex import MultiplexPlan, run_multiplex
    from wirelab.net.netns import NamespaceUnavailable

    plan = MultiplexPlan(losses_pct=losses, rtt_ms=rtt, repeat=repeat, modes=modes, servers=servers)
    console, progress = _consoles()
    try:
        _exit(lambda: run_multiplex(plan, json_path=json_path, console=console, progress=progress), console)
    except NamespaceUnavailable as exc:
        raise click.ClickException(f"{exc} (the bench needs its own network namespace)") from None


def _percent(value: str) -> float:
    share = float(value)
    if not 0 <= share < 100:
        raise ValueError(f"{value}: a loss is 0 to 100 per cent")
    return share


def _consoles() -> tuple[Console, Progress]:
    """The table on stdout (wide enough when it is not a terminal), progress on stderr."""
    from rich.console import Console
    from rich.progress import Progress

    console = Console() if sys.stdout.isatty() else Console(width=140)
    return console, Progress(console=Console(stderr=True))


def _exit(run: Callable[[], int], console: Console) -> None:
    """Exit with the scenario's status; Ctrl-C exits 130 once everything it started is stopped."""
    try:
        status = run()
    except KeyboardInterrupt:
        console.print("interrupted: servers and clients stopped")
        sys.exit(130)
    sys.exit(status)

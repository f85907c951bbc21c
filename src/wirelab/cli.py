"""The `wirelab` command. Each subcommand imports its family lazily, so `wirelab --help` is instant."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click

from wirelab.units import ByteSize

__all__ = ["main"]


class LazyGroup(click.Group):
    """Subcommands named "module:attribute" are imported only when invoked or listed in help."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, _, attribute = self.lazy[name].partition(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(
    cls=LazyGroup,
    lazy={
        "bench": "wirelab.bench.commands:bench",
        "ca": "wirelab.net.ca_command:ca",
        "demo": "wirelab.demo.commands:demo",
        "fetch": "wirelab.clients.fetch_command:fetch",
        "impair": "wirelab.net.impair_command:impair",
        "lb": "wirelab.proxy.commands:lb",
        "proxy": "wirelab.proxy.forward_command:proxy",
        "sidecar": "wirelab.proxy.sidecar_command:sidecar",
    },
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "WIRELAB"},
)
@click.version_option(package_name="wirelab")
def main() -> None:
    """Wirelab: backend communication patterns and protocols, running for real and measured.

    Start the service with `wirelab up`, then follow a job over any transport with
    `wirelab submit --watch --via sse` (or get, short, long, ws).
    Every option can also be set in the environment: WIRELAB_<COMMAND>_<OPTION> (e.g.
    WIRELAB_UP_HEARTBEAT=5), and the common ones by shorter names: WIRELAB_HOST, WIRELAB_PORT,
    WIRELAB_DATA_DIR, WIRELAB_STORE, WIRELAB_WORKERS.
    """


_DATA_DIR = click.option(
    "--data-dir",
    default=".wirelab",
    show_default=True,
    type=click.Path(path_type=Path),
    envvar="WIRELAB_DATA_DIR",
    show_envvar=True,
    help="The data directory: the SQLite store, uploaded images and the pipeline's outputs.",
)
_BROKER = click.option(
    "--broker",
    default="memory",
    show_default=True,
    envvar="WIRELAB_BROKER",
    show_envvar=True,
    help="Broker URL: memory (embedded, this process only), amqp://... (RabbitMQ) or redis://... "
    "(Redis Streams).",
)
_NAMESPACE = click.option(
    "--namespace",
    default="wirelab",
    show_default=True,
    envvar="WIRELAB_NAMESPACE",
    show_envvar=True,
    help="Prefix of every exchange, queue and stream on the broker (separate labs on one engine).",
)


def _server_options(command: click.decorators.FC) -> click.decorators.FC:
    """The options `up` and `serve` share: where to listen, which engines, the limits."""
    for option in reversed(_SERVER_OPTIONS):
        command = option(command)
    return command


_SERVER_OPTIONS = [
    click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        envvar="WIRELAB_HOST",
        show_envvar=True,
        help="Address to listen on.",
    ),
    click.option(
        "--port",
        default=8000,
        show_default=True,
        type=int,
        envvar="WIRELAB_PORT",
        show_envvar=True,
        help="TCP port (0: any free).",
    ),
    click.option(
        "--http",
        "versions",
        default="1.1",
        show_default=True,
        callback=lambda _ctx, _param, value: _http_versions(value),
        envvar="WIRELAB_HTTP",
        show_envvar=True,
        help="HTTP versions to serve, comma-separated: 1.1, 2, 3. 1.1 alone is uvicorn in the clear on "
        "--port; with 2 or 3, hypercorn serves HTTP/1.1 and h2c on --port, HTTP/1.1 and HTTP/2 over TLS "
        "on TCP --tls-port and HTTP/3 on UDP --tls-port, with a certificate from the lab's CA (see "
        "`wirelab ca`). HTTP/1.0 requests are answered wherever HTTP/1.1 is.",
    ),
    click.option(
        "--tls-port",
        default=8443,
        show_default=True,
        type=click.IntRange(1, 65535),
        envvar="WIRELAB_TLS_PORT",
        show_envvar=True,
        help="TCP port of HTTPS (HTTP/1.1 and HTTP/2) and UDP port of HTTP/3, when --http has 2 or 3.",
    ),
    _DATA_DIR,
    click.option(
        "--store",
        default="sqlite:",
        show_default=True,
        envvar="WIRELAB_STORE",
        show_envvar=True,
        help="Store URL; sqlite: alone means DATA_DIR/wirelab.db.",
    ),
    _BROKER,
    _NAMESPACE,
    click.option(
        "--workers",
        default=4,
        show_default=True,
        type=int,
        envvar="WIRELAB_WORKERS",
        show_envvar=True,
        help="Jobs run at the same time.",
    ),
    click.option(
        "--heartbeat",
        "heartbeat_s",
        default=15.0,
        show_default=True,
        type=float,
        help="Seconds between SSE heartbeat comments on an idle stream.",
    ),
    click.option(
        "--max-lag",
        default=1024,
        show_default=True,
        type=int,
        help="Versions a push subscriber may fall behind before it is dropped.",
    ),
    click.option(
        "--ws-max-size",
        default=1 << 20,
        show_default=True,
        type=int,
        help="Largest WebSocket message accepted, in bytes (bigger: close 1009).",
    ),
    click.option(
        "--max-image-size",
        "max_image_bytes",
        default="64MiB",
        show_default=True,
        type=ByteSize(),
        help="Largest image accepted, in one request or by tus: 64MiB, 1GiB, 1048576... (bigger: 413).",
    ),
    click.option(
        "--upload-expiry",
        "upload_expiry_s",
        default=86400.0,
        show_default=True,
        type=click.FloatRange(1),
        help="Seconds an unfinished tus upload is kept after its last PATCH (then: 410, and removed).",
    ),
    click.option(
        "--idempotency-ttl",
        "idempotency_ttl_s",
        default=86400.0,
        show_default=True,
        type=click.FloatRange(1),
        help="Seconds an Idempotency-Key and the answer stored with it are kept, then swept.",
    ),
    click.option(
        "--idempotency-stale",
        "idempotency_stale_s",
        default=60.0,
        show_default=True,
        type=click.FloatRange(0.001),
        help="Seconds after which a key claimed by a request that never answered (its process died) "
        "may be taken by a retry.",
    ),
    click.option(
        "--header-timeout",
        "header_timeout_s",
        default=10.0,
        show_default=True,
        type=click.FloatRange(0.001, 3600),
        help="Seconds a request head may take to arrive whole (then: 408 and close; slow-loris defence).",
    ),
    click.option(
        "--idle-timeout",
        "idle_timeout_s",
        default=5,
        show_default=True,
        type=click.IntRange(1, 3600),
        help="Seconds a kept-alive connection may wait for its next request before it is closed.",
    ),
    click.option(
        "--body-timeout",
        "body_timeout_s",
        default=30.0,
        show_default=True,
        type=click.FloatRange(0.001, 3600),
        help="Seconds a request body may stall before the connection is cut (a tus PATCH keeps what came).",
    ),
    click.option(
        "--max-connections",
        type=click.IntRange(1, 1_000_000),
        help="Open connections (WebSockets and streams too) past which new ones get 503 + Retry-After "
        "[default: 80% of the open-file limit, `ulimit -n`].",
    ),
    click.option(
        "--access-log/--no-access-log",
        default=True,
        show_default=True,
        help="Log one line per request.",
    ),
    click.option(
        "--log-level",
        default="info",
        show_default=True,
        type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    ),
]


@main.command()
@_server_options
@click.option(
    "--pipeline/--no-pipeline",
    default=True,
    show_default=True,
    help="Run the image pipeline's stages in this process (--no-pipeline: `wirelab worker` runs them).",
)
def up(pipeline: bool, **options: Any) -> None:
    """Run the Job Status service on embedded defaults (SQLite, nothing to install), all in one process:
    the HTTP API, the jobs' work and (unless --no-pipeline) the image pipeline's stages.

    Ctrl-C or SIGTERM stops it gracefully: streams close cleanly and unfinished jobs stay in the
    store, to resume at the next start.
    """
    _serve_app(options, pipeline=pipeline, dispatch=False)


@main.command()
@_server_options
def serve(**options: Any) -> None:
    """Run only the stateless HTTP API: every job's work goes to `wirelab worker` processes over the
    broker, and all state lives in the store, so several `serve` processes on one PostgreSQL and one
    broker are interchangeable (put them behind a balancer); they wake each other through the broker.

    Example: wirelab serve --port 8001 --store postgresql://localhost/wirelab --broker amqp://localhost/
    """
    _require_shared(options["broker"])
    _serve_app(options, pipeline=False, dispatch=True)


def _serve_app(options: dict[str, Any], *, pipeline: bool, dispatch: bool) -> None:
    from wirelab.app import Config, WirelabApp
    from wirelab.errors import ConfigError
    from wirelab.http.guard import ConnectionLimits
    from wirelab.http.serve import serve

    access_log = options.pop("access_log")
    versions: frozenset[str] = options.pop("versions")
    tls_port: int = options.pop("tls_port")
    limit_names = ("header_timeout_s", "idle_timeout_s", "body_timeout_s", "max_connections")
    try:
        chosen = {name: options.pop(name) for name in limit_names}
        limits = ConnectionLimits(**{k: v for k, v in chosen.items() if v is not None})
        config = Config(**options, limits=limits, pipeline=pipeline, dispatch=dispatch)
        app = WirelabApp(config)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    settings: dict[str, Any] = {
        "on_stop": app.begin_shutdown,
        "ws_max_size": config.ws_max_size,
        "limits": config.limits,
        "access_log": access_log,
        "log_level": config.log_level,
    }
    if versions == {"1.1"}:
        _print_urls(config.host, config.port)
        serve(app, host=config.host, port=config.port, **settings)
        return
    from wirelab.http.serve import serve_versions
    from wirelab.net.tls import CertificateAuthority

    wildcard = config.host in ("0.0.0.0", "::")
    names = list(dict.fromkeys(["localhost", "127.0.0.1", "::1", *([] if wildcard else [config.host])]))
    try:
        authority = CertificateAuthority.load_or_create(config.data_dir / "ca")
        certificate = authority.issue(names)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    _print_urls(config.host, config.port, tls_port=tls_port, versions=versions, ca=authority.cert_path)
    serve_versions(
        app,
        host=config.host,
        port=config.port,
        tls_port=tls_port,
        versions=versions,
        certificate=certificate,
        **settings,
    )


def _http_versions(value: str) -> frozenset[str]:
    """`--http 1.1,2,3` as a set; HTTP/1.1 is always in it (HTTP/2 and HTTP/3 are found through it)."""
    from wirelab.http.serve import VERSIONS

    asked = {part.strip() for part in value.split(",") if part.strip()}
    unknown = sorted(asked - set(VERSIONS))
    if unknown:
        hint = " (HTTP/1.0 requests are answered wherever 1.1 is)" if "1.0" in unknown else ""
        raise click.BadParameter(f"{', '.join(unknown)} unknown: choose among {', '.join(VERSIONS)}{hint}")
    return frozenset(asked | {"1.1"})


_VIA_HELP = (
    "get: one request/response; short: GET every --interval seconds; long: long polling; "
    "sse: Server-Sent Events; ws: WebSocket push."
)


def _follow_options(command: click.decorators.FC) -> click.decorators.FC:
    options = [
        click.option(
            "--url",
            "--server",
            "url",
            default="http://127.0.0.1:8000",
            show_default=True,
            help="Base URL of the service.",
        ),
        click.option(
            "--via",
            default="sse",
            show_default=True,
            type=click.Choice(["get", "short", "long", "sse", "ws"]),
            help=_VIA_HELP,
        ),
        click.option(
            "--interval",
            default=1.0,
            show_default=True,
            type=click.FloatRange(0.01),
            help="Seconds between short polls.",
        ),
        click.option(
            "--wait",
            default=30.0,
            show_default=True,
            type=click.FloatRange(0, 60),
            help="Seconds a long poll may wait.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@click.argument("job_id")
@_follow_options
def watch(job_id: str, url: str, via: str, interval: float, wait: float) -> None:
    """Follow JOB_ID with a progress bar until it ends; exit 0 if it is done.

    Exit status: 0 done, 1 failed or canceled, 75 still running (only with --via get, which
    asks once).
    """
    _run(_watch(url, job_id, via, interval, wait))


@main.command()
@click.argument("kind", type=click.Choice(["demo", "image"]), default="demo")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--steps", default=10, show_default=True, type=int, help="Steps of the demo job.")
@click.option("--step-ms", default=200, show_default=True, type=int, help="Milliseconds per step.")
@click.option("--watch/--no-watch", "follow", default=False, help="Follow the job to its end.")
@_follow_options
def submit(
    kind: str,
    file: Path | None,
    steps: int,
    step_ms: int,
    follow: bool,
    url: str,
    via: str,
    interval: float,
    wait: float,
) -> None:
    """Create a job and print its snapshot; with --watch, follow it like `wirelab watch`.

    `wirelab submit` makes a demo job; `wirelab submit image FILE` uploads FILE in one request
    (POST /images), which starts its image job: the pipeline compresses it and resizes it to 480p,
    1080p and 4k. (`wirelab upload` sends big files resumably, by tus.)
    """
    if kind == "image" and file is None:
        raise click.UsageError("wirelab submit image needs the FILE to upload")
    spec: dict[str, Any] = {"kind": "demo", "steps": steps, "step_ms": step_ms}
    _run(_submit(url, spec, file if kind == "image" else None, follow, via, interval, wait))


def _parse_targets(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    """--targets: absent asks for every output, `none` for none (the image is stored, no job starts)."""
    from wirelab.errors import Unprocessable
    from wirelab.proto.pipeline import parse_targets

    if value is None:
        return None
    try:
        return () if value.strip().lower() == "none" else parse_targets(value)
    except Unprocessable as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--chunk",
    default="4MiB",
    show_default=True,
    type=ByteSize(),
    help="Bytes per PATCH request: 4MiB, 512KiB, 1048576...",
)
@click.option(
    "--parallel",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Parts of the file uploaded side by side (tus concatenation), then joined.",
)
@click.option(
    "--checksum",
    type=click.Choice(["sha1", "md5", "sha256"]),
    help="Send each chunk's digest (Upload-Checksum); the server discards a chunk that does not match.",
)
@click.option(
    "--targets",
    callback=_parse_targets,
    help="Outputs of the image's job: comma-separated 480p,1080p,4k, or none to only store the image "
    "[default: all].",
)
@click.option("--single", is_flag=True, help="Send the file in one request (POST /images): not resumable.")
@click.option("--watch/--no-watch", "follow", default=False, help="Follow the image's job to its end.")
@_follow_options
def upload(
    file: Path,
    chunk: int,
    parallel: int,
    checksum: str | None,
    targets: tuple[str, ...] | None,
    single: bool,
    follow: bool,
    url: str,
    via: str,
    interval: float,
    wait: float,
) -> None:
    """Upload the image FILE by tus, check the server stored exactly its bytes, print its image and job.

    The upload's URLs are kept in $XDG_CACHE_HOME/wirelab/uploads.json (default ~/.cache/...): after
    Ctrl-C, a lost connection or a crash, the same command resumes where the server's bytes end, for
    one HEAD request per upload URL. Exit status: 0 stored and its sha256 verified (with --watch: and
    the job done), 1 refused, unreachable, not verified or the job failed, 130 interrupted.
    """
    options = {"chunk": chunk, "parallel": parallel, "checksum": checksum, "targets": targets}
    _run(_upload(file, options, single, follow, url, via, interval, wait))


@main.command()
@click.argument(
    "services",
    nargs=-1,
    required=True,
    type=click.Choice(["compress", "format", "notify", "demo", "all"]),
)
@_BROKER
@_DATA_DIR
@click.option(
    "--consumers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Consumers of each service in this process.",
)
@_NAMESPACE
def worker(services: tuple[str, ...], broker: str, data_dir: Path, consumers: int, namespace: str) -> None:
    """Run worker services in their own process: the image pipeline's compress, format and notify,
    demo (the demo jobs `wirelab serve` dispatches), or all of them.

    Start as many as you like, on the same broker and data directory as `wirelab up --broker URL`
    or `wirelab serve`; each service's consumers share its queue. Workers report progress over the
    broker and keep no state of their own. Ctrl-C stops them; a message being worked on goes back
    to the queue for another worker.
    """
    import asyncio

    from wirelab.app.pipeline import SERVICES, run_services
    from wirelab.errors import ConfigError
    from wirelab.pubsub import BrokerError, open_broker

    _require_shared(broker)
    names = list(SERVICES) if "all" in services else list(dict.fromkeys(services))

    async def work() -> None:
        connection = open_broker(broker, namespace=namespace)
        await connection.connect()
        try:
            await run_services(connection, data_dir, names, consumers=consumers)
        finally:
            await connection.close()

    click.echo(f"wirelab worker: {', '.join(names)} on {broker} ({consumers} consumer(s) each)", err=True)
    try:
        asyncio.run(work())
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        click.echo("wirelab worker: stopped", err=True)


@main.command()
@click.argument("action", type=click.Choice(["list", "replay"]))
@_BROKER
@click.option(
    "--service",
    "services",
    multiple=True,
    type=click.Choice(["compress", "format", "notify", "feed"]),
    help="Only this service's dead letters (repeatable; default: all).",
)
@_NAMESPACE
def dlq(action: str, broker: str, services: tuple[str, ...], namespace: str) -> None:
    """Show the dead-letter queues (messages that failed every attempt), or replay them."""
    import asyncio

    from wirelab.pubsub import BrokerError, open_broker

    _require_shared(broker)

    async def act() -> None:
        connection = open_broker(broker, namespace=namespace)
        await connection.connect()
        try:
            for service in services or ("compress", "format", "notify", "feed"):
                if action == "replay":
                    click.echo(f"{service}: replayed {await connection.replay(service)}")
                    continue
                for letter in await connection.dead_letters(service):
                    m = letter.message
                    click.echo(
                        f"{service}\t{m.id}\t{m.topic}\tattempts={m.attempts}\t{letter.reason}"
                        f"\t{m.body[:120].decode(errors='replace')}"
                    )
        finally:
            await connection.close()

    try:
        asyncio.run(act())
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from None


def _require_shared(broker: str) -> None:
    """The embedded broker lives inside one process; workers and other instances cannot reach it."""
    if broker == "memory":
        raise click.UsageError("this needs a shared broker: --broker amqp://... or redis://...")


def _run(coro: Coroutine[Any, Any, int]) -> None:
    import asyncio

    import httpx

    from wirelab.errors import WirelabError

    try:
        sys.exit(asyncio.run(coro))
    except WirelabError as exc:
        raise click.ClickException(str(exc)) from None
    except (httpx.TransportError, OSError) as exc:
        raise click.ClickException(f"cannot reach the service: {exc}") from None
    except KeyboardInterrupt:
        sys.exit(130)


async def _submit(
    url: str,
    spec: dict[str, Any],
    file: Path | None,
    follow: bool,
    via: str,
    interval: float,
    wait: float,
) -> int:
    import json

    from wirelab.clients import JobsClient

    client = JobsClient(url)
    try:
        if file is None:
            snapshot = await client.submit(spec)
        else:
            snapshot = await client.get((await client.upload_image(file))["job"])
    finally:
        await client.aclose()
    click.echo(json.dumps(snapshot))
    if not follow:
        return 0
    return await _watch(url, snapshot["id"], via, interval, wait)


async def _watch(url: str, job_id: str, via: str, interval: float, wait: float) -> int:
    from rich.console import Console

    from wirelab.clients import follower_for
    from wirelab.clients.watch import watch_job

    follower = follower_for(via, url, interval=interval, wait=wait)
    console = Console(stderr=True)
    try:
        last = await watch_job(follower, job_id, console=console)
    finally:
        await follower.aclose()
    state = last.data.get("state") if last else None
    console.print(f"job {job_id}: {state}")
    if state == "done":
        return 0
    return 75 if state in ("queued", "running") else 1


async def _upload(
    file: Path,
    options: dict[str, Any],
    single: bool,
    follow: bool,
    url: str,
    via: str,
    interval: float,
    wait: float,
) -> int:
    import json

    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from wirelab.clients.upload import Uploader

    console = Console(stderr=True, soft_wrap=True)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
    )
    bar = Progress(*columns, console=console)
    task = bar.add_task(f"{'POST' if single else 'tus'} {file.name}", total=None)
    uploader = Uploader(
        url, on_progress=lambda done, total: bar.update(task, completed=done, total=total), **options
    )
    try:
        with bar:
            result = await (uploader.upload_single(file) if single else uploader.upload(file))
    except BaseException:
        if uploader.resumable:
            console.print(
                "the upload is unfinished: the server keeps what arrived; the same command resumes it"
            )
        raise
    finally:
        await uploader.aclose()
    image = result.image
    resumed = " (resumed)" if result.resumed else ""
    console.print(
        f"image {image['id']}: sha256 {image['sha256']} verified, {image['bytes']:,} bytes{resumed}"
    )
    console.print(f"job {result.job}" if result.job else "no job started")
    summary = {"image": image, "job": result.job, "upload": result.url, "resumed": result.resumed}
    click.echo(json.dumps({**summary, "verified": True}))
    if not follow or result.job is None:
        return 0
    return await _watch(url, result.job, via, interval, wait)


def _print_urls(
    host: str,
    port: int,
    *,
    tls_port: int = 0,
    versions: frozenset[str] = frozenset(),
    ca: Path | None = None,
) -> None:
    base = f"http://{host}:{port}"
    ws = f"ws://{host}:{port}"
    lines = [
        ("gallery", f"{base}/gallery"),
        ("jobs", f"POST {base}/jobs   GET {base}/jobs/ID[?after=V&wait=S]"),
        ("server-sent events", f"{base}/jobs/ID/events   {base}/topics/logins/events"),
        ("websocket push", f"{ws}/ws   (echo: {ws}/ws/echo)"),
        ("logins demo", f"POST {base}/logins"),
        ("health", f"{base}/healthz"),
    ]
    if tls_port:
        secure = f"https://{host}:{tls_port}"
        over = " and HTTP/3 (UDP)" if "3" in versions else ""
        h2 = "HTTP/2 and " if "2" in versions else ""
        lines.append(("https", f"{secure}/gallery   ({h2}HTTP/1.1 over TLS{over}; trust {ca})"))
        if "2" in versions:
            lines.append(("h2c", f"{base}/gallery   (curl --http2-prior-knowledge)"))
    for name, text in lines:
        click.echo(f"  {name:<20} {text}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The `wirelab` command. Each subcommand imports its family lazily, so `wirelab --help` is instant."""

from __future__ import annotations

import sys
from pathlib import Path

import click

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "WIRELAB"})
@click.version_option(package_name="wirelab")
def main() -> None:
    """Wirelab: backend communication patterns and protocols, running for real and measured.

    Start the service with `wirelab up`, then follow a job over any transport with
    `wirelab submit --watch --via sse` (or get, short, long, ws).
    Every option can also be set as WIRELAB_<COMMAND>_<OPTION>, e.g. WIRELAB_UP_PORT=9000.
    """


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port (0: any free).")
@click.option("--data-dir", default=".wirelab", show_default=True, type=click.Path(path_type=Path),
              help="Where the SQLite store (and later uploads and outputs) live.")
@click.option("--store", default="sqlite:", show_default=True,
              help="Store URL; sqlite: alone means DATA_DIR/wirelab.db.")
@click.option("--workers", default=4, show_default=True, type=int,
              help="Jobs run at the same time.")
@click.option("--heartbeat", "heartbeat_s", default=15.0, show_default=True, type=float,
              help="Seconds between SSE heartbeat comments on an idle stream.")
@click.option("--max-lag", default=1024, show_default=True, type=int,
              help="Versions a push subscriber may fall behind before it is dropped.")
@click.option("--ws-max-size", default=1 << 20, show_default=True, type=int,
              help="Largest WebSocket message accepted, in bytes (bigger: close 1009).")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="Log one line per request.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
def up(
    host: str,
    port: int,
    data_dir: Path,
    store: str,
    workers: int,
    heartbeat_s: float,
    max_lag: int,
    ws_max_size: int,
    access_log: bool,
    log_level: str,
) -> None:
    """Run the Job Status service on embedded defaults (SQLite, nothing to install).

    Ctrl-C or SIGTERM stops it gracefully: streams close cleanly and unfinished jobs stay in the
    store, to resume at the next start.
    """
    from wirelab.app import Config, WirelabApp
    from wirelab.errors import ConfigError
    from wirelab.http.serve import serve

    try:
        config = Config(host=host, port=port, data_dir=data_dir, store=store, workers=workers,
                        heartbeat_s=heartbeat_s, max_lag=max_lag, ws_max_size=ws_max_size,
                        log_level=log_level)
        app = WirelabApp(config)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _print_urls(host, port)
    serve(app, host=host, port=port, on_stop=app.begin_shutdown, ws_max_size=ws_max_size,
          access_log=access_log, log_level=log_level)


def _print_urls(host: str, port: int) -> None:
    base = f"http://{host}:{port}"
    ws = f"ws://{host}:{port}"
    lines = [
        ("jobs", f"POST {base}/jobs   GET {base}/jobs/ID[?after=V&wait=S]"),
        ("server-sent events", f"{base}/jobs/ID/events   {base}/topics/logins/events"),
        ("websocket push", f"{ws}/ws   (echo: {ws}/ws/echo)"),
        ("logins demo", f"POST {base}/logins"),
        ("health", f"{base}/healthz"),
    ]
    for name, text in lines:
        click.echo(f"  {name:<20} {text}", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

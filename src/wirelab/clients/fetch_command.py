"""The `wirelab fetch` command. Only click is imported at module level, so `--help` stays instant."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from rich.console import Console

    from wirelab.clients.fetch import FetchResult, PageResult, TraceEvent

__all__ = ["fetch"]

_ROWS = 12
"""Connections listed in a page's table (HTTP/1.0 opens one per request)."""
_ARROWS = {"send": ("->", "cyan"), "recv": ("<-", "green"), "note": ("..", "dim")}


@click.command()
@click.argument("url")
@click.option(
    "--http",
    "version",
    default="1.1",
    show_default=True,
    type=click.Choice(["1.0", "1.1", "2", "3"]),
    help="1.0: a connection per request; 1.1: keep-alive; 2: TLS with ALPN h2, or h2c for http:// "
    "URLs; 3: QUIC (https:// only).",
)
@click.option(
    "--page",
    is_flag=True,
    help="Fetch the HTML at URL, then every same-origin <img src>, <link href> and <script src> in it, "
    "like a browser.",
)
@click.option(
    "--connections",
    type=click.IntRange(1, 256),
    help="HTTP/1.x connections for a page at once [default: 6, a browser's pool; 1 with --pipeline].",
)
@click.option("--pipeline", is_flag=True, help="HTTP/1.1: write a connection's requests all at once.")
@click.option(
    "--migrate",
    is_flag=True,
    help="HTTP/3: after the first bytes of the body, move to a new UDP socket (QUIC connection migration).",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The CA to trust [default: the lab's, $WIRELAB_DATA_DIR/ca/ca.pem (.wirelab/ca/ca.pem), when it "
    "exists, else the system's].",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0.01),
    help="Seconds for each connect, handshake and wait for data.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show what goes over the wire (on stderr).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")
def fetch(
    url: str,
    version: str,
    page: bool,
    connections: int | None,
    pipeline: bool,
    migrate: bool,
    cacert: Path | None,
    timeout: float,
    verbose: bool,
    as_json: bool,
) -> None:
    """GET URL over HTTP/1.0, 1.1, 2 or 3 and show what it took: DNS and connect, the TLS or QUIC
    handshake, the first byte, the total, the bytes on the wire, the handshakes made.

    With -v, what went over the wire: HTTP/1 heads, HTTP/2 frames (SETTINGS, WINDOW_UPDATE, HEADERS
    decoded from HPACK, DATA...), QUIC packets and their frames and HTTP/3 frames.

    \b
    Example: wirelab fetch https://localhost:8443/ --http 2 -v
             wirelab fetch https://localhost:8443/ --http 1.1 --page --connections 6
             wirelab fetch https://localhost:8443/big.bin --http 3 --migrate -v
    Exit status: 0 answered below 400 (every request, with --page), 1 otherwise or on an error,
    2 a usage error, 130 interrupted.
    """
    import asyncio
    import logging
    import sys

    from rich.console import Console

    from wirelab.clients.fetch import FetchError, FetchResult, fetch, fetch_page
    from wirelab.errors import ConfigError

    logging.getLogger("quic").setLevel(logging.CRITICAL)  # aioquic's own account of what we report
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    options: dict[str, Any] = {
        "http": version,
        "cafile": cacert or _lab_ca(),
        "timeout_s": timeout,
        "tracer": _tracer(err) if verbose else None,
    }
    if page and migrate:
        raise click.UsageError("--migrate is for one URL, not --page")
    if not page and (pipeline or connections):
        raise click.UsageError("--pipeline and --connections are for --page")

    async def run() -> FetchResult | PageResult:
        if page:
            width = connections or (1 if pipeline else 6)
            return await fetch_page(url, connections=width, pipeline=pipeline, **options)
        return await fetch(url, migrate_after=1 if migrate else None, **options)

    try:
        # The standard loop, not uvloop: uvloop's TLS layer logs "Fatal error on SSL protocol" for
        # handshakes cancelled mid-way (Ctrl-C while a page's connections open; MagicStack/uvloop#68),
        # and a client that shows the protocols gains nothing from a faster loop.
        result = asyncio.run(run())
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    except FetchError as exc:
        raise click.ClickException(str(exc)) from None
    except (KeyboardInterrupt, asyncio.CancelledError):
        err.print("wirelab fetch: interrupted")
        sys.exit(130)
    out = Console(highlight=False)
    if isinstance(result, FetchResult):
        statuses: tuple[int, ...] = (result.status,)
        click.echo(_json(result)) if as_json else _show_fetch(out, result)
    else:
        statuses = result.statuses
        click.echo(_json(result)) if as_json else _show_page(out, result)
    sys.exit(0 if all(status < 400 for status in statuses) else 1)


def _lab_ca() -> Path | None:
    """The lab's CA certificate, when the data directory holds one."""
    path = Path(os.environ.get("WIRELAB_DATA_DIR", ".wirelab")) / "ca" / "ca.pem"
    return path if path.is_file() else None


def _tracer(console: Console) -> Any:
    from rich.text import Text

    def show(event: TraceEvent) -> None:
        arrow, style = _ARROWS[event.direction]
        lines = event.text.split("\n")
        text = Text(f"{event.at_ms:9.1f} ms #{event.connection} {arrow} ", style=style)
        text.append(lines[0])
        for line in lines[1:]:
            text.append(f"\n{'':>22}{line}")
        console.print(text)

    return show


def _json(result: FetchResult | PageResult) -> str:
    import dataclasses
    import json

    def drop_bodies(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: drop_bodies(item) for key, item in value.items() if key != "body"}
        if isinstance(value, list | tuple):
            return [drop_bodies(item) for item in value]
        return value

    return json.dumps(drop_bodies(dataclasses.asdict(result)))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def _show_fetch(out: Console, result: FetchResult) -> None:
    from http import HTTPStatus

    from rich.table import Table

    stats = result.connection_stats[0]
    table = Table(show_header=False, box=None, padding=(0, 2))
    try:
        phrase = HTTPStatus(result.status).phrase
    except ValueError:
        phrase = ""
    length = "" if result.content_length is None else f" (Content-Length {result.content_length:,})"
    rows = [
        ("status", f"{result.status} {phrase}  over {stats.protocol}"),
        ("body", f"{result.body_bytes:,} bytes{length}"),
        ("DNS" if result.http == "3" else "DNS + connect", _ms(result.connect_ms)),
        ("TLS handshake" if result.http != "3" else "QUIC handshake", _ms(result.handshake_ms)),
        ("first byte", _ms(result.first_byte_ms)),
        ("total", _ms(result.total_ms)),
        (
            "bytes on wire",
            f"{result.bytes_on_wire:,} (sent {stats.bytes_sent:,}, received {stats.bytes_received:,})",
        ),
        (
            "connections",
            f"{result.connections}, handshakes {result.handshakes}, local port {stats.local_port}",
        ),
    ]
    if result.closed_by_server:
        rows.append(("connection", "closed by the server after the response"))
    if result.migration is not None:
        moved = result.migration
        rows.append(
            (
                "migration",
                f"UDP port {moved.from_port} -> {moved.to_port} after {moved.at_bytes:,} body bytes; "
                f"{result.path_challenges} PATH_CHALLENGE from the server; transfer completed",
            )
        )
    elif result.migration_disabled:
        rows.append(("migration", "not done: the server sent disable_active_migration"))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


def _show_page(out: Console, result: PageResult) -> None:
    from collections import Counter

    from rich import box
    from rich.table import Table

    statuses = ", ".join(f"{status} x{count}" for status, count in sorted(Counter(result.statuses).items()))
    summary = Table(show_header=False, box=None, padding=(0, 2))
    summary.add_row("page", f"{result.url} over HTTP/{result.http}")
    summary.add_row("requests", f"{result.requests} ({statuses})")
    summary.add_row("page time", _ms(result.page_ms))
    summary.add_row("bytes on wire", f"{result.bytes_on_wire:,}")
    summary.add_row("connections", f"{result.connections}, handshakes {result.handshakes}")
    out.print(summary)
    table = Table(
        "#", "proto", "port", "reqs", "connect", "handshake", "sent", "recv", "closed by", box=box.SIMPLE
    )
    shown = result.connection_stats[:_ROWS]
    for stats in shown:
        table.add_row(
            str(stats.number),
            stats.protocol,
            str(stats.local_port),
            str(stats.requests),
            _ms(stats.connect_ms),
            _ms(stats.handshake_ms),
            f"{stats.bytes_sent:,}",
            f"{stats.bytes_received:,}",
            "server" if stats.closed_by_server else "client",
        )
    out.print(table)
    if len(result.connection_stats) > len(shown):
        out.print(f"... and {len(result.connection_stats) - len(shown)} more connections")

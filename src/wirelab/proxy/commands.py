"""The `wirelab lb` command group. Only click is imported at module level, so `--help` stays instant."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import asyncio

__all__ = ["lb"]


@click.group()
def lb() -> None:
    """Load balancers: layer 4 (TCP) and layer 7 (HTTP/1.1)."""


@lb.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML file with every setting (see wirelab.proxy.config); flags override its keys.",
)
@click.option(
    "--listen", help="HOST:PORT to accept clients on (port 0: any free).  [default: from --config]"
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    metavar="HOST:PORT[,weight=N]",
    help="A backend (repeat for each); replaces the file's backends.",
)
@click.option(
    "--algorithm",
    type=click.Choice(["round-robin", "least-connections", "source-hash"]),
    help="How to pick a backend.  [default: round-robin]",
)
@click.option(
    "--splice/--copy",
    "splice",
    default=None,
    help="Data path: zero-copy splice(2) (Linux) or copying through user space.  [default: splice]",
)
@click.option(
    "--proxy-protocol",
    type=click.Choice(["v1", "v2", "none"]),
    help="Send a PROXY protocol header to backends, so they see the client's address.  [default: none]",
)
@click.option("--connect-timeout", type=float, help="Seconds to connect to a backend.  [default: 2]")
@click.option(
    "--idle-timeout",
    type=float,
    help="Seconds without a byte either way before closing; 0: never.  [default: 300]",
)
@click.option(
    "--max-connections", type=int, help="Open connections; more wait in the backlog.  [default: 10000]"
)
@click.option(
    "--drain-timeout", type=float, help="Seconds SIGTERM lets open connections finish.  [default: 10]"
)
@click.option(
    "--check-interval", type=float, help="Seconds between active TCP health checks; 0: off.  [default: 0]"
)
@click.option("--rise", type=int, help="Passed checks that bring a backend back.  [default: 2]")
@click.option("--fall", type=int, help="Failed checks that take a backend out.  [default: 3]")
@click.option("--eject", type=float, help="Seconds a failed connect keeps a backend out.  [default: 10]")
def l4(config_path: Path | None, backends: tuple[str, ...], **flags: Any) -> None:
    """Run the layer 4 (TCP) balancer: each client connection goes whole to one backend.

    \b
    Example: wirelab lb l4 --listen 127.0.0.1:8080 --backend 127.0.0.1:9001 --backend 127.0.0.1:9002
    SIGTERM or Ctrl-C: stop accepting, let open connections finish (--drain-timeout), exit.
    SIGHUP: read --config again and apply it to new connections; open ones are not dropped.
    """
    import asyncio
    import logging

    from wirelab.errors import ConfigError
    from wirelab.proxy.config import load_config, parse_backend_flag
    from wirelab.proxy.l4 import serve

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="wirelab lb l4: %(message)s")
    try:
        overrides = _overrides(flags, [parse_backend_flag(text) for text in backends])
        load_config(config_path, overrides)  # refuse a bad configuration before anything starts
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(lambda: load_config(config_path, overrides)))
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from None


@lb.command()
@click.option("--listen", required=True, help="HOST:PORT to accept clients on (port 0: any free).")
@click.option(
    "--backend",
    "backends",
    multiple=True,
    required=True,
    metavar="HOST:PORT[,weight=N]",
    help="A backend (repeat for each).",
)
@click.option(
    "--algorithm",
    default="round-robin",
    show_default=True,
    metavar="round-robin|least-outstanding|hash-header:NAME|hash-cookie:NAME",
    help="How to pick a backend for each request; the hashes are sticky.",
)
@click.option("--connect-timeout", default=2.0, show_default=True, help="Seconds to connect to a backend.")
@click.option(
    "--idle-timeout",
    default=300.0,
    show_default=True,
    help="Seconds without a byte inside a request body or an upgraded (WebSocket) connection.",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    help="Seconds for a request head to arrive (also how long a keep-alive client may idle).",
)
@click.option(
    "--max-connections",
    default=10000,
    show_default=True,
    help="Open client connections; more wait in the backlog.",
)
@click.option(
    "--check-interval",
    default=0.0,
    show_default=True,
    help="Seconds between active HTTP checks (GET --check-path); 0: passive checks only.",
)
@click.option("--check-path", default="/", show_default=True, help="The path active checks GET.")
@click.option(
    "--metrics-path",
    default="/__metrics",
    show_default=True,
    help="Where the listener serves Prometheus metrics; an empty value turns them off.",
)
@click.option("--eject", default=10.0, show_default=True, help="Seconds a failing backend is kept out.")
def l7(
    listen: str,
    backends: tuple[str, ...],
    algorithm: str,
    connect_timeout: float,
    idle_timeout: float,
    header_timeout: float,
    max_connections: int,
    check_interval: float,
    check_path: str,
    metrics_path: str,
    eject: float,
) -> None:
    """Run the layer 7 (HTTP/1.1) balancer: each request goes to a backend, over pooled connections.

    \b
    Example: wirelab lb l7 --listen 127.0.0.1:8080 --backend 127.0.0.1:9001 --backend 127.0.0.1:9002
    Idempotent requests are retried on another backend when one fails; SIGTERM or Ctrl-C stops it.
    """
    import asyncio
    import logging

    from wirelab.errors import ConfigError
    from wirelab.proxy.l7 import l7_config, serve

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="wirelab lb l7: %(message)s")
    try:
        config = l7_config(
            listen,
            backends,
            algorithm=algorithm,
            connect_timeout_s=connect_timeout,
            idle_timeout_s=idle_timeout,
            header_timeout_s=header_timeout,
            max_connections=max_connections,
            check_interval_s=check_interval or None,
            check_path=check_path,
            metrics_path=metrics_path or None,
            eject_s=eject,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(config))
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from None


def _overrides(flags: dict[str, Any], backends: list[dict[str, Any]]) -> dict[str, Any]:
    """The flags given, as the keys of the TOML file they stand for."""
    health_keys = {"check_interval": "interval", "rise": "rise", "fall": "fall", "eject": "eject"}
    raw: dict[str, Any] = {"backends": backends} if backends else {}
    health = {health_keys[k]: v for k, v in flags.items() if k in health_keys and v is not None}
    if health:
        raw["health"] = health
    splice = flags.pop("splice")
    if splice is not None:
        raw["mode"] = "splice" if splice else "copy"
    raw.update({k: v for k, v in flags.items() if k not in health_keys and v is not None})
    return raw


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where available, as the project's other servers run on it."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop

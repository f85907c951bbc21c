"""The `wirelab lb` command group. Only click is imported at module level, so `--help` stays instant."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    pass

__all__ = ["lb"]


@click.group()
def lb() -> None:
    """Load balancers: layer 4 (TCP) and layer 7 (HTTP/1.1 and HTTP/2)."""


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
    import logging

    from wirelab.errors import ConfigError
    from wirelab.net.loop import runner
    from wirelab.proxy.config import load_config, parse_backend_flag
    from wirelab.proxy.l4 import serve

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="wirelab lb l4: %(message)s")
    try:
        overrides = _overrides(flags, [parse_backend_flag(text) for text in backends])
        load_config(config_path, overrides)  # refuse a bad configuration before anything starts
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        with runner() as loop:
            loop.run(serve(lambda: load_config(config_path, overrides)))
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from None


@lb.command()
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A TOML file with every setting: pools, routes, TLS, limits, breaker "
    "(see wirelab.proxy.l7config); flags override its keys.",
)
@click.option(
    "--listen", help="HOST:PORT to accept clients on (port 0: any free).  [default: from --config]"
)
@click.option(
    "--backend",
    "backends",
    multiple=True,
    metavar="HOST:PORT[,weight=N]",
    help="A backend of the pool named default (repeat for each).",
)
@click.option(
    "--algorithm",
    metavar="round-robin|least-outstanding|hash-header:NAME|hash-cookie:NAME",
    help="How the default pool picks a backend for each request; the hashes are sticky.  "
    "[default: round-robin]",
)
@click.option(
    "--backend-protocol",
    type=click.Choice(["http/1.1", "h2c", "h2"]),
    help="How the default pool speaks to its backends: HTTP/1.1 keep-alive connections, or one "
    "multiplexed HTTP/2 connection per backend, in clear (h2c) or over TLS (h2).  [default: http/1.1]",
)
@click.option(
    "--tls-name",
    "tls_names",
    multiple=True,
    metavar="NAME",
    help="Terminate TLS (ALPN h2 and http/1.1) with a certificate for NAME from the lab's CA "
    "(.wirelab/ca; see `wirelab ca`); repeat for more names.",
)
@click.option("--connect-timeout", type=float, help="Seconds to connect to a backend.  [default: 2]")
@click.option(
    "--idle-timeout",
    type=float,
    help="Seconds without a byte inside a request body or an upgraded (WebSocket) connection.  "
    "[default: 300]",
)
@click.option(
    "--header-timeout",
    type=float,
    help="Seconds for a request head to arrive (also how long a keep-alive client may idle).  "
    "[default: 10]",
)
@click.option(
    "--max-connections",
    type=int,
    help="Open client connections; more wait in the backlog.  [default: 10000]",
)
@click.option(
    "--max-header-bytes", type=int, help="Bytes of request header fields; more: 431.  [default: 65536]"
)
@click.option(
    "--max-body-bytes", type=int, help="Bytes of a request body; more: 413; 0: unlimited.  [default: 0]"
)
@click.option(
    "--drain-timeout", type=float, help="Seconds SIGTERM lets requests in flight finish.  [default: 10]"
)
@click.option(
    "--check-interval",
    type=float,
    help="Seconds between active HTTP checks (GET --check-path); 0: passive checks only.  [default: 0]",
)
@click.option("--check-path", help="The path active checks GET.  [default: /]")
@click.option(
    "--metrics-path",
    help="Where the listener serves Prometheus metrics; an empty value turns them off.  "
    "[default: /__metrics]",
)
@click.option("--eject", type=float, help="Seconds a failing backend is kept out.  [default: 10]")
@click.option(
    "--parser",
    type=click.Choice(["llhttp", "python"]),
    help="How HTTP/1.1 is read from clients and backends: llhttp (compiled, fast) or the lab's own "
    "parser in Python (slower; `wirelab bench lb` shows both).  [default: llhttp]",
)
def l7(config_path: Path | None, **flags: Any) -> None:
    """Run the layer 7 (HTTP) balancer: each request goes to a backend, over pooled connections.

    Clients speak HTTP/1.1, or HTTP/2 (over TLS by ALPN, or in clear with prior knowledge);
    backends speak HTTP/1.1. Requests are routed by host and path prefix to pools (--config);
    idempotent requests are retried on another backend when one fails.

    \b
    Example: wirelab lb l7 --listen 127.0.0.1:8080 --backend 127.0.0.1:9001 --backend 127.0.0.1:9002
             wirelab lb l7 --config lb.toml
    SIGTERM or Ctrl-C: stop accepting, let requests in flight finish (--drain-timeout), exit.
    SIGHUP: read --config again and apply it to new requests; open connections are not dropped.
    """
    import logging

    from wirelab.errors import ConfigError
    from wirelab.net.loop import runner
    from wirelab.proxy.l7 import serve
    from wirelab.proxy.l7config import l7_overrides, load_l7_config

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="wirelab lb l7: %(message)s")
    flags["tls_names"] = list(flags["tls_names"]) or None
    try:
        overrides = l7_overrides(flags)
        load_l7_config(config_path, overrides)  # refuse a bad configuration before anything starts
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        with runner() as loop:
            loop.run(serve(lambda: load_l7_config(config_path, overrides)))
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from None
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


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

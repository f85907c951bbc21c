"""The `wirelab proxy` command group. Only click is imported at module level, so `--help` stays instant."""

from __future__ import annotations

import click

__all__ = ["proxy"]


@click.group()
def proxy() -> None:
    """Proxies that act for the client (the balancers, acting for servers, are `wirelab lb`)."""


@proxy.command()
@click.option(
    "--listen",
    default="127.0.0.1:3128",
    show_default=True,
    help="HOST:PORT to accept clients on (port 0: any free).",
)
@click.option(
    "--connect-timeout",
    default=10.0,
    show_default=True,
    type=float,
    help="Seconds to connect to an origin.",
)
@click.option(
    "--idle-timeout",
    default=300.0,
    show_default=True,
    type=float,
    help="Seconds a client may stay silent, or a tunnel idle, before it is closed.",
)
def forward(listen: str, connect_timeout: float, idle_timeout: float) -> None:
    """Run an HTTP forward proxy: http:// URLs relayed to their origin, CONNECT tunnels for the rest.

    \b
    Example: wirelab proxy forward --listen 127.0.0.1:3128
             curl -x http://127.0.0.1:3128 http://example.com/    (relayed, with Via added)
             curl -x http://127.0.0.1:3128 https://example.com/   (CONNECT: TLS end to end)
    A request without a full URL (GET /path) is refused with 400: that is a reverse proxy's job.
    SIGTERM or Ctrl-C stops it.
    """
    import asyncio
    import logging
    import signal
    import sys

    from wirelab.errors import ConfigError
    from wirelab.proxy.config import parse_address
    from wirelab.proxy.forward import ForwardProxy, serve_forward_proxy

    try:
        host, port = parse_address(listen, "--listen", allow_zero=True)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="wirelab proxy forward: %(message)s")
    proxy = ForwardProxy(connect_timeout=connect_timeout, idle_timeout=idle_timeout)

    def ready(bound_host: str, bound_port: int) -> None:
        logging.getLogger(__name__).info("listening on %s:%d", bound_host, bound_port)

    async def run() -> None:
        server = asyncio.create_task(serve_forward_proxy(host, port, proxy, on_ready=ready))
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, server.cancel)
        await server

    try:
        asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("wirelab proxy forward: stopped", err=True)
    except OSError as exc:
        raise click.ClickException(f"cannot listen: {exc}") from None

"""The `wirelab sidecar` command. Only click is imported at module level, so `--help` stays instant."""

from __future__ import annotations

from pathlib import Path

import click

__all__ = ["sidecar"]


@click.command()
@click.option(
    "--listen",
    default="127.0.0.1:15001",
    show_default=True,
    help="HOST:PORT the application sends its HTTP/1.1 requests to (port 0: any free).",
)
@click.option(
    "--upstream",
    required=True,
    help="http://HOST:PORT (HTTP/2 without TLS, prior knowledge) or https://HOST:PORT (TLS, ALPN h2).",
)
@click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="CA certificate an https:// upstream's certificate must chain to [default: the system's CAs].",
)
@click.option(
    "--connections",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="HTTP/2 connections to the upstream; requests take them in turn.",
)
@click.option(
    "--retries",
    default=2,
    show_default=True,
    type=click.IntRange(0, 10),
    help="Further attempts for a request that is safe to send again.",
)
@click.option(
    "--timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds for the upstream's response head, then for each piece of its body (else 504).",
)
@click.option(
    "--connect-timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds to open an upstream connection (TCP, TLS, the first SETTINGS).",
)
def sidecar(
    listen: str,
    upstream: str,
    cacert: Path | None,
    connections: int,
    retries: int,
    timeout: float,
    connect_timeout: float,
) -> None:
    """Run a sidecar: take HTTP/1.1 from a local application, forward it over HTTP/2 to the upstream.

    Every request from any number of client connections becomes a stream of one multiplexed HTTP/2
    connection (or --connections N), gets a W3C traceparent (the client's trace continued, or a new
    one) and an x-request-id (echoed on the response), and is retried with backoff when that is safe:
    bodyless and idempotent (GET, HEAD, OPTIONS, TRACE, or an Idempotency-Key) on a failure or a
    502/503/504, or any bodyless request the upstream refused unprocessed. One log line per request:
    method, path, status, milliseconds, attempts, trace id.

    \b
    Example: wirelab sidecar --listen 127.0.0.1:15001 --upstream http://127.0.0.1:8080
             curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' \\
                  http://127.0.0.1:15001/
    With TLS: --upstream https://localhost:8443 --cacert .wirelab/ca/ca.pem
    SIGTERM or Ctrl-C stops accepting, lets the requests in flight finish, then exits.
    """
    import logging
    import sys

    from wirelab.errors import ConfigError
    from wirelab.net.loop import runner
    from wirelab.proxy.sidecar import serve, sidecar_config

    try:
        config = sidecar_config(
            listen,
            upstream,
            cafile=cacert,
            connections=connections,
            retries=retries,
            timeout_s=timeout,
            connect_timeout_s=connect_timeout,
        )
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="wirelab sidecar: %(message)s")
    try:
        with runner() as loop:
            loop.run(serve(config))
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc}") from None

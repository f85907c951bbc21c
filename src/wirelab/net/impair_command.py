"""The `wirelab impair` command. Only click is imported at module level, so `--help` stays instant."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from wirelab.units import Measure, parse_duration, parse_rate, parse_share

if TYPE_CHECKING:
    from wirelab.net.impair import ImpairedTcp, ImpairedUdp

__all__ = ["impair"]

TCP_LOSS = (
    "--loss drops packets, but the TCP proxy terminates TCP on both sides and carries a byte stream, "
    "which cannot lose bytes. Use --udp for datagrams, or drop TCP packets in a network namespace "
    "(wirelab.net.netns.lossy_namespace; docs/network-impairment.md)."
)


@click.command()
@click.option("--listen", required=True, help="HOST:PORT to accept clients on (port 0: any free).")
@click.option("--upstream", required=True, help="HOST:PORT to forward to.")
@click.option(
    "--delay",
    default="0",
    show_default=True,
    type=Measure(parse_duration, "duration"),
    help="One-way delay, added in each direction (so a round trip takes 2 x delay more): 50ms, 1.5s.",
)
@click.option(
    "--jitter",
    default="0",
    show_default=True,
    type=Measure(parse_duration, "duration"),
    help="Each chunk or datagram's delay is drawn from delay +- jitter (TCP keeps its order).",
)
@click.option(
    "--rate",
    type=Measure(parse_rate, "rate"),
    help="Bandwidth of each direction, in tc's units: 64kbit, 10mbit, 1gbit [default: unlimited].",
)
@click.option(
    "--loss",
    default="0%",
    show_default=True,
    type=Measure(parse_share, "share"),
    help="Share of datagrams dropped in each direction (--udp only): 1%, 0.5%.",
)
@click.option("--udp", is_flag=True, help="Carry UDP datagrams instead of TCP connections.")
@click.option(
    "--idle-timeout",
    default="60s",
    show_default=True,
    type=Measure(parse_duration, "duration"),
    help="With --udp: a client's mapping (its own upstream socket) is closed after this long unused.",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the jitter and loss draws.")
def impair(
    listen: str,
    upstream: str,
    delay: float,
    jitter: float,
    rate: int | None,
    loss: float,
    udp: bool,
    idle_timeout: float,
    seed: int,
) -> None:
    """Forward TCP connections (or UDP datagrams) to --upstream over an impaired link: delayed,
    jittered, rate-limited and, for UDP, lossy, as netem would make it, in user space.

    The same impairment applies to each direction, so --delay 50ms makes a round trip 100 ms
    longer. TCP is terminated on both sides (two connections, each on loopback), so TCP's own
    loss recovery never sees the delay; for loss on TCP, or delay in the packets' own path, use
    a network namespace (root): see docs/network-impairment.md.

    \b
    Examples:
      wirelab impair --listen 127.0.0.1:9000 --upstream 127.0.0.1:8000 --delay 25ms
      wirelab impair --listen 127.0.0.1:9000 --upstream 127.0.0.1:8000 --rate 10mbit --delay 10ms
      wirelab impair --listen 127.0.0.1:4433 --upstream 127.0.0.1:4434 --udp --loss 1% --jitter 2ms
    One line is logged per connection (or UDP mapping) as it ends. Ctrl-C or SIGTERM stops it.
    """
    from wirelab.errors import ConfigError
    from wirelab.net.address import parse_address
    from wirelab.net.impair import ImpairedTcp, ImpairedUdp
    from wirelab.proto.impair import Impairment

    if loss and not udp:
        raise click.UsageError(TCP_LOSS)
    proxy: ImpairedTcp | ImpairedUdp
    try:
        listen_at = parse_address(listen, "--listen", allow_zero=True)
        upstream_at = parse_address(upstream, "--upstream")
        link = Impairment(delay_s=delay, jitter_s=jitter, rate_bps=rate, loss=loss, seed=seed)
        if udp:
            proxy = ImpairedUdp(listen_at, upstream_at, up=link, down=link, idle_s=idle_timeout)
        else:
            proxy = ImpairedTcp(listen_at, upstream_at, up=link, down=link)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _serve(proxy, listen, f"{'udp' if udp else 'tcp'} to {upstream}, each way: {link}")


def _serve(proxy: ImpairedTcp | ImpairedUdp, listen: str, what: str) -> None:
    """Run until Ctrl-C or SIGTERM, on the standard loop (its timers are finer than uvloop's)."""
    import asyncio
    import logging
    import signal
    import sys

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="wirelab impair: %(message)s")
    log = logging.getLogger(__name__)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await proxy.start()
        log.info("listening on %s:%d, %s", *proxy.address, what)
        await stop.wait()
        log.info("stopping")
        await proxy.stop()

    try:
        asyncio.run(run())
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {listen}: {exc}") from None
    click.echo("wirelab impair: stopped", err=True)

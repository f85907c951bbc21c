"""The `wirelab ca` command group. Only click is imported at module level, so `--help` stays instant."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from wirelab.net.tls import CertificateAuthority

__all__ = ["ca"]


@click.group()
@click.option(
    "--data-dir",
    default=".wirelab",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    envvar="WIRELAB_DATA_DIR",
    show_envvar=True,
    help="The data directory; the CA lives in its ca/ folder.",
)
@click.pass_context
def ca(ctx: click.Context, data_dir: Path) -> None:
    """The lab's own certificate authority, for the servers that speak TLS (the layer 7 balancer,
    the sidecar, the HTTP/1.1, HTTP/2 and HTTP/3 servers).

    It is made on first use in DATA_DIR/ca/: ca.pem, the certificate clients trust, and
    ca-key.pem, its private key (mode 0600; keep it to yourself). Servers get their certificates
    from it, under DATA_DIR/ca/leaf/. Nothing is installed system-wide: trust it per client.

    \b
    Example: wirelab ca show
             curl --cacert .wirelab/ca/ca.pem https://localhost:8443/
    """
    ctx.obj = data_dir / "ca"


@ca.command()
@click.pass_obj
def show(directory: Path) -> None:
    """Print the CA's certificate path, subject, SHA-256 fingerprint and validity (making it if need be)."""
    authority = _authority(directory)
    certificate = authority.certificate
    click.echo(f"certificate  {authority.cert_path}")
    click.echo(f"subject      {certificate.subject.rfc4514_string()}")
    click.echo(f"sha256       {authority.fingerprint}")
    valid = (certificate.not_valid_before_utc, certificate.not_valid_after_utc)
    click.echo(f"valid        {valid[0]:%Y-%m-%d %H:%M} UTC to {valid[1]:%Y-%m-%d %H:%M} UTC")
    click.echo(f"trust it:    curl --cacert {authority.cert_path} https://localhost:PORT/")


@ca.command()
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def issue(directory: Path, names: tuple[str, ...]) -> None:
    """Issue a server certificate for NAMES (DNS names and IP addresses) and print its cert and key paths.

    An existing certificate that covers NAMES and has more than a day left is reused.

    \b
    Example: wirelab ca issue localhost 127.0.0.1 ::1
    """
    from wirelab.errors import ConfigError

    try:
        cert, key = _authority(directory).issue(names)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"certificate  {cert}")
    click.echo(f"key          {key}")


def _authority(directory: Path) -> CertificateAuthority:
    from wirelab.errors import ConfigError
    from wirelab.net.tls import CertificateAuthority

    try:
        return CertificateAuthority.load_or_create(directory)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None

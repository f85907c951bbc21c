"""HOST:PORT as commands and configuration files spell an address; the balancers and `wirelab
impair` read them alike."""

from __future__ import annotations

from wirelab.errors import ConfigError

__all__ = ["parse_address"]


def parse_address(text: str, key: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """HOST:PORT, the host in brackets if it is IPv6 ([::1]:80)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not (0 if allow_zero else 1) <= int(port) <= 65535:
        raise ConfigError(f"{key}: {text!r} is not HOST:PORT")
    return host, int(port)

"""The layer 4 balancer's configuration: one TOML file, flags for simple cases, validated at load.

Theory of operation: the file and the flags produce the same raw mapping (flags given on the command
line override the file's keys), and one validator turns it into a frozen `L4Config`, so both are
checked alike and every error names the bad key as it is spelled in the file (`backends[1].weight`,
`health.rise`). A reload (SIGHUP) runs the same function again on the same file and flags.

    listen = "127.0.0.1:8080"
    algorithm = "round-robin"        # least-connections, source-hash
    mode = "splice"                  # copy
    proxy_protocol = "v2"            # v1, none
    connect_timeout = 2.0            # seconds
    idle_timeout = 300.0             # seconds; 0: never
    max_connections = 10000          # beyond it, new clients wait in the listen backlog
    drain_timeout = 10.0             # seconds SIGTERM lets open connections finish

    [health]
    interval = 2.0                   # seconds between active TCP checks; 0: passive checks only
    rise = 2                         # successful checks that bring a backend back
    fall = 3                         # failed checks that take it out
    eject = 10.0                     # seconds a failed connect keeps a backend out

    [[backends]]
    address = "127.0.0.1:9001"
    weight = 2
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wirelab.errors import ConfigError
from wirelab.proto.balance import ALGORITHMS, Backend, HealthPolicy
from wirelab.proxy.settings import (
    check_table,
    choice,
    load_raw,
    number,
    parse_address,
    parse_backend,
    parse_backend_flag,
)

__all__ = ["L4Config", "load_config", "parse_address", "parse_backend_flag", "parse_config"]

_TOP: dict[str, type] = {
    "listen": str,
    "algorithm": str,
    "mode": str,
    "proxy_protocol": str,
    "connect_timeout": float,
    "idle_timeout": float,
    "max_connections": int,
    "drain_timeout": float,
    "backends": list,
    "health": dict,
}
_HEALTH: dict[str, type] = {"interval": float, "rise": int, "fall": int, "eject": float}


@dataclass(frozen=True, slots=True)
class L4Config:
    listen: tuple[str, int]
    backends: tuple[Backend, ...]
    algorithm: str = "round-robin"
    splice: bool = True
    proxy_protocol: str | None = None
    connect_timeout_s: float = 2.0
    idle_timeout_s: float | None = 300.0
    max_connections: int = 10000
    drain_timeout_s: float = 10.0
    check_interval_s: float | None = None
    health: HealthPolicy = field(default_factory=HealthPolicy)


def load_config(path: Path | None, overrides: Mapping[str, Any]) -> L4Config:
    """Read `path` (if any), lay the flags' `overrides` over it (a table's keys one by one), validate."""
    return parse_config(load_raw(path, overrides))


def parse_config(raw: Mapping[str, Any]) -> L4Config:
    """Validate the raw mapping; a ConfigError names the first bad key."""
    check_table(raw, _TOP, "")
    health = raw.get("health", {})
    check_table(health, _HEALTH, "health.")
    if "listen" not in raw:
        raise ConfigError("listen: required (HOST:PORT)")
    backends = raw.get("backends", [])
    if not backends:
        raise ConfigError("backends: at least one backend is required")
    protocol = choice(raw, "proxy_protocol", ("v1", "v2", "none"), "none")
    return L4Config(
        listen=parse_address(raw["listen"], "listen", allow_zero=True),
        backends=tuple(parse_backend(entry, f"backends[{index}]") for index, entry in enumerate(backends)),
        algorithm=choice(raw, "algorithm", ALGORITHMS, "round-robin"),
        splice=choice(raw, "mode", ("splice", "copy"), "splice") == "splice",
        proxy_protocol=None if protocol == "none" else protocol,
        connect_timeout_s=number(raw, "connect_timeout", 2.0),
        idle_timeout_s=number(raw, "idle_timeout", 300.0, allow_zero=True) or None,
        max_connections=int(number(raw, "max_connections", 10000)),
        drain_timeout_s=number(raw, "drain_timeout", 10.0, allow_zero=True),
        check_interval_s=number(health, "interval", 0.0, allow_zero=True, where="health.") or None,
        health=HealthPolicy(
            rise=int(number(health, "rise", 2, where="health.")),
            fall=int(number(health, "fall", 3, where="health.")),
            eject_s=number(health, "eject", 10.0, where="health."),
        ),
    )

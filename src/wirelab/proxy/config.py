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

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wirelab.errors import ConfigError
from wirelab.proto.balance import ALGORITHMS, Backend, HealthPolicy

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
_BACKEND: dict[str, type] = {"address": str, "weight": int}
_TYPE_NAMES = {str: "a string", float: "a number", int: "an integer", list: "an array", dict: "a table"}


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
    """Read `path` (if any), lay the flags' `overrides` over it (health keys one by one), validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for key, value in overrides.items():
        if key == "health" and isinstance(raw.get("health"), dict):
            raw["health"] = {**raw["health"], **value}
        else:
            raw[key] = value
    return parse_config(raw)


def parse_config(raw: Mapping[str, Any]) -> L4Config:
    """Validate the raw mapping; a ConfigError names the first bad key."""
    _check(raw, _TOP, "")
    health = raw.get("health", {})
    _check(health, _HEALTH, "health.")
    if "listen" not in raw:
        raise ConfigError("listen: required (HOST:PORT)")
    backends = raw.get("backends", [])
    if not backends:
        raise ConfigError("backends: at least one backend is required")
    protocol = _choice(raw, "proxy_protocol", ("v1", "v2", "none"), "none")
    return L4Config(
        listen=parse_address(raw["listen"], "listen", allow_zero=True),
        backends=tuple(_backend(entry, f"backends[{index}]") for index, entry in enumerate(backends)),
        algorithm=_choice(raw, "algorithm", ALGORITHMS, "round-robin"),
        splice=_choice(raw, "mode", ("splice", "copy"), "splice") == "splice",
        proxy_protocol=None if protocol == "none" else protocol,
        connect_timeout_s=_number(raw, "connect_timeout", 2.0),
        idle_timeout_s=_number(raw, "idle_timeout", 300.0, allow_zero=True) or None,
        max_connections=int(_number(raw, "max_connections", 10000)),
        drain_timeout_s=_number(raw, "drain_timeout", 10.0, allow_zero=True),
        check_interval_s=_number(health, "interval", 0.0, allow_zero=True, where="health.") or None,
        health=HealthPolicy(
            rise=int(_number(health, "rise", 2, where="health.")),
            fall=int(_number(health, "fall", 3, where="health.")),
            eject_s=_number(health, "eject", 10.0, where="health."),
        ),
    )


def parse_address(text: str, key: str, *, allow_zero: bool = False) -> tuple[str, int]:
    """HOST:PORT, the host in brackets if it is IPv6 ([::1]:80)."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not (0 if allow_zero else 1) <= int(port) <= 65535:
        raise ConfigError(f"{key}: {text!r} is not HOST:PORT")
    return host, int(port)


def parse_backend_flag(text: str) -> dict[str, Any]:
    """A --backend flag, HOST:PORT or HOST:PORT,weight=N, as the raw table the file would hold."""
    address, _, options = text.partition(",")
    entry: dict[str, Any] = {"address": address}
    if options:
        name, _, value = options.partition("=")
        if name != "weight" or not value.isdigit():
            raise ConfigError(f"--backend: {text!r} is not HOST:PORT or HOST:PORT,weight=N")
        entry["weight"] = int(value)
    return entry


def _check(table: Mapping[str, Any], schema: Mapping[str, type], where: str) -> None:
    for key, value in table.items():
        expected = schema.get(key)
        if expected is None:
            raise ConfigError(f"{where}{key}: unknown setting (known: {', '.join(schema)})")
        numeric = expected is float and isinstance(value, int)
        if isinstance(value, bool) or not (isinstance(value, expected) or numeric):
            raise ConfigError(f"{where}{key}: expected {_TYPE_NAMES[expected]}, got {value!r}")


def _backend(entry: Any, where: str) -> Backend:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table with address and weight")
    _check(entry, _BACKEND, f"{where}.")
    if "address" not in entry:
        raise ConfigError(f"{where}.address: required (HOST:PORT)")
    host, port = parse_address(entry["address"], f"{where}.address")
    return Backend(host, port, int(_number(entry, "weight", 1, where=f"{where}.")))


def _choice(table: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value: str = table.get(key, default)
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def _number(
    table: Mapping[str, Any], key: str, default: float, *, allow_zero: bool = False, where: str = ""
) -> float:
    """The number at `key` (its type already checked), which must be > 0, or >= 0 where 0 means "off"."""
    value: float = table.get(key, default)
    if value < 0 or (value == 0 and not allow_zero):
        limit = "0 (off) or more" if allow_zero else "greater than 0"
        raise ConfigError(f"{where}{key}: must be {limit}, got {value!r}")
    return value

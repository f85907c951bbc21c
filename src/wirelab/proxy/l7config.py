"""The layer 7 balancer's configuration: one TOML file, flags for simple cases, validated at load.

Theory of operation: as for the layer 4 balancer (wirelab.proxy.config), the file and the flags make
one raw mapping (`l7_overrides` turns the flags into the file's keys, laid over the file's table by
table) and one validator turns it into a frozen `L7Config`, with the helpers of
wirelab.proxy.settings, so every error names the key as the file spells it
(`pools.api.backends[1].weight`, `routes[0].pool`, `limits.max_header_bytes`, `tls.cert`). A
reload (SIGHUP) runs the same function on the same file and flags. Nothing is read at load but the
file itself: certificates are the server's business when it starts (or reloads).

Requests are routed (wirelab.proto.routing) by host and path prefix to named pools of backends;
each pool has its own balancing algorithm. With no routes, a single pool takes every request; with
several pools, routes must say which requests go to each, and a pool no route leads to is an error,
as is a route to a pool that does not exist. `--backend` flags make (or replace the backends of) the
pool named "default". Relative paths are taken from the working directory, as flags' are.

    listen = "127.0.0.1:8443"
    connect_timeout = 2.0            # seconds to connect to a backend
    idle_timeout = 300.0             # seconds without a byte inside a body or an upgraded connection
    header_timeout = 10.0            # seconds for a request head to arrive (slowloris defence)
    max_connections = 10000          # beyond it, new clients wait in the listen backlog
    drain_timeout = 10.0             # seconds SIGTERM lets open requests finish; 0: none
    metrics_path = "/__metrics"      # Prometheus text on the same listener; "": off
    parser = "llhttp"                # how HTTP/1.1 is read: llhttp (compiled) or python (ours)

    [tls]                            # absent: plain HTTP/1.1 and h2c; present: TLS, ALPN h2 and http/1.1
    names = ["localhost", "127.0.0.1"]   # issue a certificate for these from our CA in ca_dir ...
    ca_dir = ".wirelab/ca"
    # cert = "server.pem"            # ... or bring your own, cert and key together (not with names)
    # key = "server-key.pem"

    [limits]
    max_request_line = 8192          # bytes; longer: 414
    max_header_bytes = 65536         # bytes of header fields; more: 431
    max_headers = 100                # header fields; more: 431
    max_body_bytes = 0               # bytes of a request body; more: 413; 0: unlimited

    [health]
    interval = 0.0                   # seconds between active checks (GET path); 0: passive checks only
    path = "/"
    rise = 2                         # successful checks that bring a backend back
    fall = 3                         # failed checks that take it out
    eject = 10.0                     # seconds a failed connect keeps a backend out

    [breaker]                        # per backend; a failure: connect error, reset, timeout, 5xx
    failures = 5                     # consecutive failures that open the circuit
    open = 10.0                      # seconds it stays open before trial requests
    half_open_requests = 1           # trial requests at a time; the first verdict closes or reopens it

    [pools.api]                      # a pool's name: letters, digits, - and _
    algorithm = "least-outstanding"  # round-robin, least-outstanding, hash-header:NAME, hash-cookie:NAME
    protocol = "http/1.1"            # or h2c (HTTP/2 in clear), h2 (over TLS; cacert = "ca.pem")
    [[pools.api.backends]]
    address = "127.0.0.1:9001"
    weight = 2                       # default 1

    [[routes]]                       # the most specific host wins, then the longest path prefix
    host = "api.example.com"         # exact or *.example.com; absent: any host
    path_prefix = "/api"             # matched at segment boundaries; default "/"
    pool = "api"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wirelab.errors import ConfigError
from wirelab.http.llhttp import DEFAULT_PARSER, PARSERS
from wirelab.proto.balance import Backend, HealthPolicy
from wirelab.proto.breaker import BreakerPolicy
from wirelab.proto.http1 import Limits
from wirelab.proto.routing import Route, RouteTable
from wirelab.proxy.settings import (
    check_table,
    load_raw,
    number,
    parse_address,
    parse_backend,
    parse_backend_flag,
)

__all__ = [
    "DEFAULT_POOL",
    "L7Config",
    "PoolConfig",
    "TLSSettings",
    "l7_overrides",
    "load_l7_config",
    "parse_l7_config",
]

DEFAULT_POOL = "default"
"""The pool `--backend` flags fill."""

_TOP: dict[str, type] = {
    "listen": str,
    "connect_timeout": float,
    "idle_timeout": float,
    "header_timeout": float,
    "max_connections": int,
    "drain_timeout": float,
    "metrics_path": str,
    "parser": str,
    "tls": dict,
    "limits": dict,
    "health": dict,
    "breaker": dict,
    "pools": dict,
    "routes": list,
}
_TLS: dict[str, type] = {"names": list, "ca_dir": str, "cert": str, "key": str}
_LIMITS: dict[str, type] = {
    "max_request_line": int,
    "max_header_bytes": int,
    "max_headers": int,
    "max_body_bytes": int,
}
_HEALTH: dict[str, type] = {"interval": float, "path": str, "rise": int, "fall": int, "eject": float}
_BREAKER: dict[str, type] = {"failures": int, "open": float, "half_open_requests": int}
_POOL: dict[str, type] = {"algorithm": str, "backends": list, "protocol": str, "cacert": str}
PROTOCOLS = ("http/1.1", "h2c", "h2")
"""How a pool's backends are spoken to: HTTP/1.1 connections from a keep-alive pool, or one
multiplexed HTTP/2 connection per backend, in clear (h2c, prior knowledge) or over TLS (h2, ALPN)."""
_ROUTE: dict[str, type] = {"host": str, "path_prefix": str, "pool": str}

_POLICIES = {"round-robin": "round-robin", "least-outstanding": "least-connections"}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 §5.6.2: header and cookie names
_POOL_NAME = re.compile(r"[A-Za-z0-9_-]+")

# The flags that stand for a key inside a table; every other flag is the top-level key of its name.
_FLAG_KEYS: dict[str, tuple[str, ...]] = {
    "algorithm": ("pools", DEFAULT_POOL, "algorithm"),
    "backend_protocol": ("pools", DEFAULT_POOL, "protocol"),
    "check_interval": ("health", "interval"),
    "check_path": ("health", "path"),
    "rise": ("health", "rise"),
    "fall": ("health", "fall"),
    "eject": ("health", "eject"),
    "tls_names": ("tls", "names"),
    "max_body_bytes": ("limits", "max_body_bytes"),
    "max_header_bytes": ("limits", "max_header_bytes"),
}


@dataclass(frozen=True, slots=True)
class PoolConfig:
    name: str
    backends: tuple[Backend, ...]
    algorithm: str = "round-robin"
    """round-robin, least-outstanding, hash-header:NAME or hash-cookie:NAME."""
    protocol: str = "http/1.1"
    """One of PROTOCOLS."""
    cacert: Path | None = None
    """The CA that signs the backends' certificates, for protocol h2 (None: the system's)."""

    @property
    def policy(self) -> str:
        """The `Pool` algorithm the configuration's spelling stands for."""
        return _POLICIES.get(self.algorithm, "source-hash")

    @property
    def hash_on(self) -> tuple[str, bytes] | None:
        """("header" or "cookie", lowercase name) for the hashing algorithms, else None."""
        kind, _, name = self.algorithm.partition(":")
        return (kind.removeprefix("hash-"), name.lower().encode()) if name else None


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """Either `names` to issue a certificate for from the CA in `ca_dir`, or `cert` and `key` files."""

    cert: Path | None = None
    key: Path | None = None
    names: tuple[str, ...] = ()
    ca_dir: Path = Path(".wirelab/ca")


@dataclass(frozen=True, slots=True)
class L7Config:
    listen: tuple[str, int]
    pools: tuple[PoolConfig, ...]
    routes: RouteTable
    tls: TLSSettings | None = None
    """None: plain HTTP/1.1 and h2c."""
    connect_timeout_s: float = 2.0
    idle_timeout_s: float = 300.0
    header_timeout_s: float = 10.0
    """Time for a request head to arrive, counted from the end of the previous exchange."""
    max_connections: int = 10000
    drain_timeout_s: float = 10.0
    check_interval_s: float | None = None
    """Seconds between active HTTP checks (GET `check_path`); None: passive checks only."""
    check_path: str = "/"
    metrics_path: str | None = "/__metrics"
    health: HealthPolicy = field(default_factory=HealthPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    limits: Limits = field(default_factory=Limits)
    parser: str = DEFAULT_PARSER
    """One of `wirelab.http.llhttp.PARSERS`: how HTTP/1.1 from clients and backends is read."""


def load_l7_config(path: Path | None, overrides: Mapping[str, Any]) -> L7Config:
    """Read `path` (if any), lay the flags' `overrides` over it (a table's keys one by one), validate."""
    return parse_l7_config(load_raw(path, overrides))


def l7_overrides(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The command's flags but --config, named as click passes them (None: not given), as the file
    keys they stand for; `backends` (HOST:PORT[,weight=N] texts) fill the pool named "default"."""
    raw: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is None or (flag == "backends" and not value):
            continue
        if flag == "backends":
            path: tuple[str, ...] = ("pools", DEFAULT_POOL, "backends")
            value = [parse_backend_flag(text) for text in value]
        else:
            path = _FLAG_KEYS.get(flag, (flag,))
        table = raw
        for key in path[:-1]:
            table = table.setdefault(key, {})
        table[path[-1]] = value
    return raw


def parse_l7_config(raw: Mapping[str, Any]) -> L7Config:
    """Validate the raw mapping; a ConfigError names the first bad key."""
    check_table(raw, _TOP, "")
    if "listen" not in raw:
        raise ConfigError("listen: required (HOST:PORT)")
    health = _table(raw, "health", _HEALTH)
    breaker = _table(raw, "breaker", _BREAKER)
    pools = _pools(raw.get("pools", {}))
    metrics = raw.get("metrics_path", "/__metrics")
    parser = raw.get("parser", DEFAULT_PARSER)
    if parser not in PARSERS:
        raise ConfigError(f"parser: {parser!r} is not {' or '.join(PARSERS)}")
    return L7Config(
        listen=parse_address(raw["listen"], "listen", allow_zero=True),
        pools=pools,
        routes=_routes(raw.get("routes", []), pools),
        tls=_tls(raw["tls"]) if "tls" in raw else None,
        connect_timeout_s=number(raw, "connect_timeout", 2.0),
        idle_timeout_s=number(raw, "idle_timeout", 300.0),
        header_timeout_s=number(raw, "header_timeout", 10.0),
        max_connections=int(number(raw, "max_connections", 10000)),
        drain_timeout_s=number(raw, "drain_timeout", 10.0, allow_zero=True),
        check_interval_s=number(health, "interval", 0.0, allow_zero=True, where="health.") or None,
        check_path=_path(health.get("path", "/"), "health.path"),
        metrics_path=_path(metrics, "metrics_path") if metrics else None,
        health=HealthPolicy(
            rise=int(number(health, "rise", 2, where="health.")),
            fall=int(number(health, "fall", 3, where="health.")),
            eject_s=number(health, "eject", 10.0, where="health."),
        ),
        breaker=BreakerPolicy(
            failures=int(number(breaker, "failures", 5, where="breaker.")),
            open_s=number(breaker, "open", 10.0, where="breaker."),
            half_open_requests=int(number(breaker, "half_open_requests", 1, where="breaker.")),
        ),
        limits=_limits(_table(raw, "limits", _LIMITS)),
        parser=parser,
    )


def _table(raw: Mapping[str, Any], key: str, schema: Mapping[str, type]) -> Mapping[str, Any]:
    table: Mapping[str, Any] = raw.get(key, {})
    check_table(table, schema, f"{key}.")
    return table


def _pools(tables: Mapping[str, Any]) -> tuple[PoolConfig, ...]:
    if not tables:
        raise ConfigError("pools: at least one pool of backends is required ([pools.NAME] or --backend)")
    return tuple(_pool(name, table) for name, table in tables.items())


def _pool(name: str, table: Any) -> PoolConfig:
    where = f"pools.{name}"
    if not _POOL_NAME.fullmatch(name):
        raise ConfigError(f"{where}: a pool's name is made of letters, digits, - and _")
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table with algorithm and backends")
    check_table(table, _POOL, f"{where}.")
    entries = table.get("backends", [])
    if not entries:
        raise ConfigError(f"{where}.backends: at least one backend is required")
    backends = [parse_backend(entry, f"{where}.backends[{i}]") for i, entry in enumerate(entries)]
    seen: dict[str, int] = {}
    for index, backend in enumerate(backends):
        first = seen.setdefault(backend.address, index)
        if first != index:
            raise ConfigError(f"{where}.backends[{index}].address: {backend.address} is backends[{first}]")
    protocol = table.get("protocol", "http/1.1")
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where}.protocol: {protocol!r} is not {', '.join(PROTOCOLS)}")
    cacert = table.get("cacert")
    if cacert is not None and protocol != "h2":
        raise ConfigError(f"{where}.cacert: only a pool with protocol h2 (TLS) has use for a CA")
    algorithm = _algorithm(table.get("algorithm", "round-robin"), where)
    return PoolConfig(name, tuple(backends), algorithm, protocol, Path(cacert) if cacert else None)


def _algorithm(value: str, where: str) -> str:
    kind, _, name = value.partition(":")
    if value in _POLICIES or (kind in ("hash-header", "hash-cookie") and _TOKEN.fullmatch(name)):
        return value
    raise ConfigError(
        f"{where}.algorithm: {value!r} is not round-robin, least-outstanding, "
        "hash-header:NAME or hash-cookie:NAME"
    )


def _routes(entries: list[Any], pools: tuple[PoolConfig, ...]) -> RouteTable:
    names = [pool.name for pool in pools]
    if not entries:
        if len(pools) > 1:
            raise ConfigError(
                f"routes: required with several pools ({', '.join(names)}), to say which gets what"
            )
        return RouteTable((Route(None, "/", names[0]),))
    table = RouteTable(tuple(_route(entry, f"routes[{i}]", names) for i, entry in enumerate(entries)))
    for name in names:
        if name not in table.pools:
            raise ConfigError(f"pools.{name}: no route leads to it")
    return table


def _route(entry: Any, where: str, pools: list[str]) -> Route:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table with host, path_prefix and pool")
    check_table(entry, _ROUTE, f"{where}.")
    if "pool" not in entry:
        raise ConfigError(f"{where}.pool: required (one of {', '.join(pools)})")
    pool = entry["pool"]
    if pool not in pools:
        raise ConfigError(f"{where}.pool: {pool!r} is not a pool (known: {', '.join(pools)})")
    try:
        return Route(entry.get("host"), entry.get("path_prefix", "/"), pool)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None


def _tls(table: Mapping[str, Any]) -> TLSSettings:
    check_table(table, _TLS, "tls.")
    names = table.get("names", [])
    for index, name in enumerate(names):
        if not isinstance(name, str) or not name or name != name.strip():
            raise ConfigError(f"tls.names[{index}]: expected a host name or address, got {name!r}")
    files = {key: table[key] for key in ("cert", "key") if key in table}
    for key, value in files.items():
        if not value:
            raise ConfigError(f"tls.{key}: must name a file")
    if len(files) == 1:
        [(given, _)] = files.items()
        raise ConfigError(f"tls.{'key' if given == 'cert' else 'cert'}: required with tls.{given}")
    if files and names:
        raise ConfigError("tls.names: not with tls.cert (names are for a certificate from our CA)")
    if not files and not names:
        raise ConfigError("tls: give names (a certificate from our CA) or cert and key (your own)")
    return TLSSettings(
        cert=Path(files["cert"]) if files else None,
        key=Path(files["key"]) if files else None,
        names=tuple(names),
        ca_dir=Path(table.get("ca_dir", ".wirelab/ca")),
    )


def _limits(table: Mapping[str, Any]) -> Limits:
    def size(key: str, default: int, *, allow_zero: bool = False) -> int:
        return int(number(table, key, default, allow_zero=allow_zero, where="limits."))

    return Limits(
        max_request_line=size("max_request_line", 8192),
        max_header_bytes=size("max_header_bytes", 65536),
        max_headers=size("max_headers", 100),
        max_body_bytes=size("max_body_bytes", 0, allow_zero=True) or None,
    )


def _path(value: str, key: str) -> str:
    if not value.startswith("/"):
        raise ConfigError(f"{key}: {value!r} must start with /")
    return value

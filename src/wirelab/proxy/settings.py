"""Checking the balancers' settings, from a TOML file and flags alike, with errors that name the key.

Theory of operation: a balancer's file and its flags become one raw mapping (`load_raw` lays the
flags' keys over the file's, table by table), and its validator walks that mapping with these
helpers. Each takes `where`, the path of the table being checked as the file spells it
(`health.`, `pools.api.backends[1].`), so that every ConfigError starts with the key to fix. Types
come first (`check_table`, so later code may trust them), then values (`number`, `choice`, addresses).
The layer 4 (wirelab.proxy.config) and layer 7 (wirelab.proxy.l7config) configurations share them.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wirelab.errors import ConfigError
from wirelab.net.address import parse_address
from wirelab.proto.balance import Backend

__all__ = [
    "check_table",
    "choice",
    "load_raw",
    "number",
    "parse_address",
    "parse_backend",
    "parse_backend_flag",
]

_TYPE_NAMES = {str: "a string", float: "a number", int: "an integer", list: "an array", dict: "a table"}
_BACKEND: dict[str, type] = {"address": str, "weight": int}


def load_raw(path: Path | None, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The file at `path` (if any) with `overrides` laid over it: tables merge key by key (so a flag
    changes one setting of a table), anything else is replaced."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return _merged(raw, overrides)


def _merged(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def check_table(table: Mapping[str, Any], schema: Mapping[str, type], where: str) -> None:
    """Every key known to `schema`, every value of its type (an integer passes for a number)."""
    for key, value in table.items():
        expected = schema.get(key)
        if expected is None:
            raise ConfigError(f"{where}{key}: unknown setting (known: {', '.join(schema)})")
        numeric = expected is float and isinstance(value, int)
        if isinstance(value, bool) or not (isinstance(value, expected) or numeric):
            raise ConfigError(f"{where}{key}: expected {_TYPE_NAMES[expected]}, got {value!r}")


def choice(table: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value: str = table.get(key, default)
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def number(
    table: Mapping[str, Any], key: str, default: float, *, allow_zero: bool = False, where: str = ""
) -> float:
    """The number at `key` (its type already checked), which must be > 0, or >= 0 where 0 means "off"."""
    value: float = table.get(key, default)
    if value < 0 or (value == 0 and not allow_zero):
        limit = "0 (off) or more" if allow_zero else "greater than 0"
        raise ConfigError(f"{where}{key}: must be {limit}, got {value!r}")
    return value


def parse_backend(entry: Any, where: str) -> Backend:
    """A backend's table: address (HOST:PORT) and an optional weight."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a table with address and weight")
    check_table(entry, _BACKEND, f"{where}.")
    if "address" not in entry:
        raise ConfigError(f"{where}.address: required (HOST:PORT)")
    host, port = parse_address(entry["address"], f"{where}.address")
    return Backend(host, port, int(number(entry, "weight", 1, where=f"{where}.")))


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

"""Quantities as people write them on a command line: byte sizes (`4MiB`, `512KiB`, `1048576`),
durations (`50ms`, `1.5s`), bit rates (`10mbit`, `1gbit`) and shares (`1%`).

The CLI and the bench both take them, and neither may import the other, so the parsers (and their
click parameter type) live down here; they need nothing of Wirelab. Binary size units are the point
of a lab that moves MiB-sized chunks; decimal ones (`kB`, `MB`, `GB`) are accepted because people type
them, and mean what they say. Rates are written as tc(8) writes them (`kbit`, `mbit`, `gbit`: powers
of 1000 bits per second), so a figure can be copied from a netem recipe; a duration or a share must
name its unit (is a bare `50` seconds or milliseconds? is `1` 1 % or all of it?).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

import click

__all__ = [
    "ByteSize",
    "Measure",
    "format_size",
    "parse_duration",
    "parse_rate",
    "parse_share",
    "parse_size",
]

T = TypeVar("T", int, float)

_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
}
_DURATIONS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
_RATES = {"bit": 1, "kbit": 1000, "mbit": 1000**2, "gbit": 1000**3}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z%]*(?:/s)?)\s*$")


def _split(text: str, units: dict[str, T]) -> tuple[float, T] | None:
    """The number and the unit's scale in `text`, or None when either is not there."""
    match = _QUANTITY.match(text)
    if match is None:
        return None
    unit = units.get(match[2].lower().removesuffix("/s"))
    return None if unit is None else (float(match[1]), unit)


def parse_size(text: str) -> int:
    """The number of bytes `text` names; ValueError (saying what is accepted) for anything else."""
    parts = _split(text, _UNITS)
    if parts is None:
        raise ValueError(
            f"a size is a number of bytes with an optional unit (4MiB, 512KiB, 100kB), not {text!r}"
        )
    size = parts[0] * parts[1]
    if size != int(size):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(size)


def parse_duration(text: str) -> float:
    """Seconds, from `50ms`, `1.5s`, `200us` or `0`."""
    parts = (0.0, 1.0) if text.strip() == "0" else _split(text, _DURATIONS)
    if parts is None:
        raise ValueError(f"a duration is a number with a unit (50ms, 1.5s, 200us), not {text!r}")
    return parts[0] * parts[1]


def parse_rate(text: str) -> int:
    """Bits per second, from `10mbit`, `1.5gbit`, `64kbit` (tc's units: powers of 1000), `/s` optional."""
    parts = _split(text, _RATES)
    if parts is None or parts[0] * parts[1] < 1:
        raise ValueError(f"a rate is a number with a unit (64kbit, 10mbit, 1gbit), not {text!r}")
    return round(parts[0] * parts[1])


def parse_share(text: str) -> float:
    """A fraction between 0 and 1, from a percentage: `1%`, `0.5%`, `100%`."""
    parts = _split(text, {"%": 0.01})
    if parts is None or parts[0] > 100:
        raise ValueError(f"a share is a percentage from 0% to 100% (1%, 0.5%), not {text!r}")
    return parts[0] * parts[1]


def format_size(size: int) -> str:
    """The largest binary unit that keeps the number at least 1: `4MiB`, `1.5GiB`, `100B`."""
    for unit in ("GiB", "MiB", "KiB"):
        scale = _UNITS[unit.lower()]
        if size >= scale:
            return f"{size / scale:g}{unit}"
    return f"{size}B"


class Measure(click.ParamType[T, "T | str"]):
    """A click parameter read with one of the parsers above (`name` shows in --help)."""

    def __init__(self, parse: Callable[[str], T], name: str) -> None:
        self.parse: Callable[[str], T] = parse
        self.name = name

    def convert(self, value: T | str, param: click.Parameter | None, ctx: click.Context | None) -> T:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class ByteSize(Measure[int]):
    """A click parameter read with `parse_size`, at least `minimum` bytes."""

    def __init__(self, minimum: int = 1) -> None:
        super().__init__(parse_size, "size")
        self.minimum = minimum

    def convert(self, value: int | str, param: click.Parameter | None, ctx: click.Context | None) -> int:
        size = super().convert(value, param, ctx)
        if size < self.minimum:
            self.fail(f"{value} is below the smallest allowed, {format_size(self.minimum)}", param, ctx)
        return size

"""Byte sizes as people write them on a command line: `4MiB`, `512KiB`, `1.5GiB`, `1048576`.

The CLI and the bench both take sizes, and neither may import the other, so the one parser (and its
click parameter type) lives down here; it needs nothing of Wirelab. Binary units are the point of a
lab that moves MiB-sized chunks; decimal ones (`kB`, `MB`, `GB`) are accepted because people type
them, and mean what they say.
"""

from __future__ import annotations

import re

import click

__all__ = ["ByteSize", "format_size", "parse_size"]

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
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """The number of bytes `text` names; ValueError (saying what is accepted) for anything else."""
    match = _SIZE.match(text)
    unit = _UNITS.get(match[2].lower()) if match else None
    if match is None or unit is None:
        raise ValueError(
            f"a size is a number of bytes with an optional unit (4MiB, 512KiB, 100kB), not {text!r}"
        )
    size = float(match[1]) * unit
    if size != int(size):
        raise ValueError(f"{text!r} is not a whole number of bytes")
    return int(size)


def format_size(size: int) -> str:
    """The largest binary unit that keeps the number at least 1: `4MiB`, `1.5GiB`, `100B`."""
    for unit in ("GiB", "MiB", "KiB"):
        scale = _UNITS[unit.lower()]
        if size >= scale:
            return f"{size / scale:g}{unit}"
    return f"{size}B"


class ByteSize(click.ParamType[int, "int | str"]):
    """A click parameter read with `parse_size`, at least `minimum` bytes."""

    name = "size"

    def __init__(self, minimum: int = 1) -> None:
        self.minimum = minimum

    def convert(self, value: int | str, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            size = value
        else:
            try:
                size = parse_size(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        if size < self.minimum:
            self.fail(f"{value} is below the smallest allowed, {format_size(self.minimum)}", param, ctx)
        return size

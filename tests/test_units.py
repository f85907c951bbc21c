"""Quantities as typed on a command line: sizes, durations, rates (tc's units) and shares."""

from __future__ import annotations

from collections.abc import Callable

import click
import pytest
from click.testing import CliRunner

from wirelab.units import ByteSize, Measure, parse_duration, parse_rate, parse_share, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"), [("50ms", 0.05), ("1.5s", 1.5), ("200us", 0.0002), (" 25 ms ", 0.025), ("0", 0.0)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "bps"),
    [("10mbit", 10_000_000), ("1.5gbit", 1_500_000_000), ("64kbit", 64_000), ("100Mbit/s", 100_000_000)],
)
def test_rates_in_powers_of_1000_bits(text: str, bps: int) -> None:
    assert parse_rate(text) == bps


@pytest.mark.parametrize(("text", "share"), [("1%", 0.01), ("0.5%", 0.005), ("100%", 1.0), ("0%", 0.0)])
def test_shares_are_percentages(text: str, share: float) -> None:
    assert parse_share(text) == pytest.approx(share)


@pytest.mark.parametrize(
    ("parse", "text", "message"),
    [
        (parse_duration, "50", "with a unit"),  # seconds or milliseconds? say which
        (parse_duration, "-5ms", "duration"),
        (parse_rate, "10mb", "64kbit, 10mbit"),  # megabytes or megabits? tc's mbit
        (parse_rate, "10", "with a unit"),
        (parse_rate, "0mbit", "rate"),
        (parse_share, "1", "percentage"),  # 1 % or all of it?
        (parse_share, "101%", "0% to 100%"),
        (parse_size, "1.5B", "whole number"),
    ],
)
def test_ambiguous_or_wrong_values_are_refused_saying_what_is_accepted(
    parse: Callable[[str], object], text: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        parse(text)


def test_the_click_types_turn_errors_into_usage_errors() -> None:
    @click.command()
    @click.option("--delay", type=Measure(parse_duration, "duration"), default="10ms")
    @click.option("--size", type=ByteSize(minimum=1024), default="4KiB")
    def show(delay: float, size: int) -> None:
        click.echo(f"{delay} {size}")

    assert CliRunner().invoke(show, []).output == "0.01 4096\n"
    result = CliRunner().invoke(show, ["--delay", "10"])
    assert result.exit_code == 2 and "a duration is a number with a unit" in result.output
    result = CliRunner().invoke(show, ["--size", "10"])
    assert result.exit_code == 2 and "below the smallest allowed, 1KiB" in result.output

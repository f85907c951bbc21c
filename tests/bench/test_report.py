"""The report helpers: percentiles, tables, the JSON document, the machine description."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from wirelab.bench.report import Column, machine_info, percentile, print_table, write_json


def test_percentile_interpolates_between_closest_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)


def test_percentile_of_one_value_is_that_value() -> None:
    assert percentile([7.5], 99) == 7.5


def test_percentile_of_nothing_is_none_not_nan() -> None:
    """None rather than NaN, because NaN is not valid JSON."""
    assert percentile([], 50) is None


@pytest.mark.parametrize("q", [-1, 100.5])
def test_percentile_outside_0_to_100_is_refused(q: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 100"):
        percentile([1.0], q)


def test_write_json_has_scenario_machine_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    rows = [{"transport": "ws", "latency_p99_ms": 1.5}]
    write_json(path, "notify", rows, plan={"jobs": 1})
    document = json.loads(path.read_text())
    assert document["scenario"] == "notify"
    assert document["rows"] == rows
    assert document["plan"] == {"jobs": 1}
    assert set(document["machine"]) >= {"cpu_count", "python", "platform"}


def test_machine_info_describes_this_machine() -> None:
    info = machine_info()
    assert info["cpu_count"] >= 1
    assert info["python"].startswith("3.")


def test_table_formats_numbers_and_shows_missing_values_as_a_dash() -> None:
    console = Console(width=100, record=True)
    columns = (Column("impl", "impl"), Column("rate", "msg/s", ",.0f"), Column("p99", "p99 ms", ".1f"))
    print_table(console, "title", columns, [{"impl": "x", "rate": 12345.6, "p99": None}])
    text = console.export_text()
    assert "12,346" in text
    assert "-" in text.splitlines()[-2]

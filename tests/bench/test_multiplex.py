"""The multiplex bench: its verdicts from rows, and a small real run in a namespace of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import unavailable
from wirelab.bench import multiplex
from wirelab.bench.commands import bench


def _row(server: str, mode: str, loss: float, p50: float) -> dict[str, object]:
    return {"server": server, "mode": mode, "loss_pct": loss, "page_ms_p50": p50}


def test_the_goals_are_said_met_or_missed_with_the_ratio_measured() -> None:
    rows = [
        _row("wirelab", "h1.1 x6", 0.0, 1000.0),
        _row("wirelab", "h2", 0.0, 500.0),
        _row("wirelab", "h2", 3.0, 800.0),
        _row("wirelab", "h3", 3.0, 1600.0),
        _row("caddy", "h2", 3.0, 1000.0),
        _row("caddy", "h3", 3.0, 600.0),
    ]
    assert multiplex.summary(rows) == [
        "wirelab: at 0 % loss, h2's page time is 0.50x h1.1 x6's "
        "(median 500 ms vs 1,000 ms; goal <= 0.8x: met)",
        "wirelab: at 3 % loss, h3's page time is 2.00x h2's "
        "(median 1,600 ms vs 800 ms; goal <= 0.7x: missed)",
        "caddy: at 3 % loss, h3's page time is 0.60x h2's (median 600 ms vs 1,000 ms; goal <= 0.7x: met)",
    ]


@pytest.mark.bench
def test_the_page_loads_every_way_on_a_lossy_slow_network(tmp_path: Path) -> None:
    missing = [tool for tool in ("ip", "nft", "iptables", "caddy") if shutil.which(tool) is None]
    if missing:
        unavailable(f"{', '.join(missing)} missing (make peers installs them)")
    out = tmp_path / "multiplex.json"
    arguments = ["multiplex", "--loss", "0,3", "--rtt", "20", "--repeat", "1", "--json", str(out)]
    result = CliRunner().invoke(bench, arguments)
    if "needs its own network namespace" in result.output:
        unavailable(result.output.strip())
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 * 2 * len(multiplex.MODES)
    for row in rows:
        assert row["failures"] == 0 and row["loads"] == 1, row
        assert row["page_ms_p50"] > 3 * 20, row  # at least the handshakes' and the page's round trips
        assert row["bytes_on_wire"] > 100 * 4000, row
        expected = 6 if row["mode"] == "h1.1 x6" else 1
        assert row["connections"] == expected and row["handshakes"] == expected, row
    assert "at 0 % loss, h2's page time is" in result.output

"""The impairment bench end to end, small: every figure set is measured, the delays never shorter
than set, the rates never faster, the losses near what was set. The namespace rows need root."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from wirelab.bench.commands import bench
from wirelab.net.impair import EARLY_S

pytestmark = pytest.mark.bench


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    path = tmp_path_factory.mktemp("impair") / "impair.json"
    options = ["--delay", "10ms", "--pings", "5", "--rates", "20mbit", "--bulk-seconds", "0.5"]
    options += ["--losses", "5%", "--datagrams", "4000", "--json", str(path)]
    result = CliRunner().invoke(bench, ["impair", *options])
    assert result.exit_code == 0, result.output
    document = json.loads(path.read_text())
    assert document["scenario"] == "impair" and document["plan"]["rates_bps"] == [20_000_000]
    return list(document["rows"])


def _pick(rows: list[dict[str, Any]], measure: str) -> list[dict[str, Any]]:
    return [row for row in rows if row["measure"] == measure]


def test_every_delay_is_at_least_the_one_set(rows: list[dict[str, Any]]) -> None:
    delays = _pick(rows, "delay")
    assert {("proxy", "tcp"), ("proxy", "udp")} <= {(row["impl"], row["transport"]) for row in delays}
    for row in delays:
        assert row["set_ms"] == 10
        assert row["min_ms"] >= 10 - EARLY_S * 1000 and row["measured_ms"] < 10 + 50, row
        assert row["error_ms"] == pytest.approx(row["measured_ms"] - 10)


def test_no_copy_runs_faster_than_its_rate(rows: list[dict[str, Any]]) -> None:
    for row in _pick(rows, "rate"):
        assert row["set_mbit_s"] == 20
        assert 20 * 0.5 < row["measured_mbit_s"] <= 20 * 1.01, row


def test_the_losses_are_near_the_share_set(rows: list[dict[str, Any]]) -> None:
    """4000 datagrams at 5 %: sigma is 0.34 points; the bound is 6 sigma."""
    for row in _pick(rows, "loss"):
        assert row["set_pct"] == 5
        assert abs(row["error_pct_points"]) < 2, row
        if row["transport"] == "tcp":
            assert row["retrans_segs"] > 0

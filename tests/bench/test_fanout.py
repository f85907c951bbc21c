"""`wirelab bench fanout` end to end, small: every client gets every message, rows are complete."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from wirelab.bench.commands import bench
from wirelab.bench.fanout import summary

pytestmark = pytest.mark.bench

CLIENTS, MESSAGES = 60, 2
KEYS = {"impl", "clients", "delivered_per_s", "latency_p99_ms", "rss_per_conn_kib"}


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    path = tmp_path_factory.mktemp("fanout") / "fanout.json"
    options = ["--clients", str(CLIENTS), "--messages", str(MESSAGES), "--batch", "20"]
    outcome = CliRunner().invoke(bench, ["fanout", *options, "--json", str(path)])
    assert outcome.exit_code == 0, outcome.output  # 1 would mean a client missed a message
    return outcome.output, json.loads(path.read_text())


def test_every_client_gets_every_message(result: tuple[str, dict[str, Any]]) -> None:
    rows = result[1]["rows"]
    assert [row["impl"] for row in rows] == ["wirelab-mixed", "wirelab-ws", "websockets-broadcast"]
    for row in rows:
        assert row["clients"] == CLIENTS
        assert row["deliveries"] == CLIENTS * MESSAGES
        assert row["missing"] == 0
        assert row["errors"] == {}


def test_rows_have_the_exact_keys_and_sane_figures(result: tuple[str, dict[str, Any]]) -> None:
    document = result[1]
    assert document["scenario"] == "fanout"
    for row in document["rows"]:
        assert set(row) >= KEYS
        assert row["delivered_per_s"] > 0
        assert 0 <= row["latency_p50_ms"] <= row["latency_p99_ms"]
        assert isinstance(row["rss_per_conn_kib"], float)


def test_ratios_against_the_peer_are_printed(result: tuple[str, dict[str, Any]]) -> None:
    output = result[0]
    assert "wirelab-ws vs websockets-broadcast" in output
    assert "goal RSS per idle WebSocket" in output


def test_summary_computes_ratios_and_goals() -> None:
    peer = {"impl": "websockets-broadcast", "delivered_per_s": 100.0, "latency_p99_ms": 10.0}
    ours = {"impl": "wirelab-ws", "delivered_per_s": 50.0, "latency_p99_ms": 30.0}
    lines = summary([{**ours, "rss_per_conn_kib": 12.0}, {**peer, "rss_per_conn_kib": 10.0}])
    assert lines[0].startswith("wirelab-ws vs websockets-broadcast: delivered msg/s 0.50x")
    assert "p99 latency 3.00x" in lines[0]
    assert "RSS/conn 1.20x" in lines[0]
    assert "12.00 KiB ([green]met" in lines[1]
    assert "0.50x ([red]not met" in lines[2]

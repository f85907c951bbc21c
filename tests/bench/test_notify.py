"""`wirelab bench notify` end to end, small: the relations the figures exist to show."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from wirelab.bench.commands import bench

pytestmark = pytest.mark.bench

JOBS, STEPS, STEP_MS, INTERVAL = 3, 4, 100, 0.1
KEYS = {"transport", "requests", "bytes_up", "bytes_down", "latency_p50_ms", "latency_p99_ms", "cpu_s"}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    path = tmp_path_factory.mktemp("notify") / "notify.json"
    options = ["--jobs", JOBS, "--steps", STEPS, "--step-ms", STEP_MS, "--interval", INTERVAL]
    result = CliRunner().invoke(bench, ["notify", *map(str, options), "--json", str(path)])
    assert result.exit_code == 0, result.output
    document = json.loads(path.read_text())
    assert document["scenario"] == "notify"
    assert {"cpu_count", "python", "platform"} <= set(document["machine"])
    return {row["transport"]: row for row in document["rows"]}


def test_every_transport_has_a_row_with_the_exact_keys(rows: dict[str, dict[str, Any]]) -> None:
    assert list(rows) == ["get", "short", "long", "sse", "ws"]
    for row in rows.values():
        assert set(row) >= KEYS
        assert row["bytes_up"] > 0
        assert row["bytes_down"] > 0
        assert row["latency_p50_ms"] is not None
        assert row["cpu_s"] >= 0


def test_push_keeps_one_connection_and_one_request_per_client(rows: dict[str, dict[str, Any]]) -> None:
    for via in ("sse", "ws"):
        assert rows[via]["connections"] == JOBS
        assert rows[via]["requests"] == JOBS


def test_push_and_long_polling_see_every_version(rows: dict[str, dict[str, Any]]) -> None:
    """After the queued snapshot: running, one per step, done."""
    for via in ("long", "sse", "ws"):
        assert rows[via]["updates"] == JOBS * (STEPS + 2)


def test_long_polling_costs_one_request_per_notification(rows: dict[str, dict[str, Any]]) -> None:
    long = rows["long"]
    assert long["updates"] <= long["requests"] <= long["updates"] + JOBS


def test_short_polling_requests_follow_job_time_over_interval(rows: dict[str, dict[str, Any]]) -> None:
    polls_per_job = STEPS * STEP_MS / 1000 / INTERVAL
    per_job = rows["short"]["requests"] / JOBS
    assert polls_per_job / 2 <= per_job <= polls_per_job * 2 + 2
    assert rows["short"]["connections"] == JOBS  # keep-alive: one connection per client


def test_request_response_asks_late_and_rarely(rows: dict[str, dict[str, Any]]) -> None:
    assert JOBS <= rows["get"]["requests"] < rows["short"]["requests"]
    assert rows["get"]["updates"] == JOBS  # only the final answer counts


def test_pushed_notifications_arrive_sooner_than_polled_ones(rows: dict[str, dict[str, Any]]) -> None:
    for via in ("sse", "ws", "long"):
        assert rows[via]["latency_p50_ms"] < rows["short"]["latency_p50_ms"]
    assert rows["short"]["latency_p50_ms"] <= INTERVAL * 1000 * 2


def test_one_stream_sends_fewer_bytes_up_than_repeated_requests(rows: dict[str, dict[str, Any]]) -> None:
    assert rows["sse"]["bytes_up"] < rows["long"]["bytes_up"]
    assert rows["ws"]["bytes_up"] < rows["long"]["bytes_up"]

"""`wirelab bench pubsub` end to end, small: complete rows, every message consumed exactly once.

The embedded broker always runs. RabbitMQ (wirelab-amqp and the aio-pika-bare peer) and Redis run
on the test machines; where one is absent the bench skips it, and so do its tests here, except
under CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from click.testing import CliRunner

from wirelab.bench import commands
from wirelab.bench.commands import bench
from wirelab.bench.pubsub import IMPLS, summary

pytestmark = pytest.mark.bench

AMQP_URL = os.environ.get("WIRELAB_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("WIRELAB_TEST_REDIS", "redis://127.0.0.1:6379/0")
MESSAGES, CONSUMERS, HOPS = 300, (1, 2), 30
KEYS = {
    "impl",
    "consumers",
    "publish_per_s",
    "consume_per_s",
    "hop_p50_ms",
    "hop_p99_ms",
    "messages",
    "deliveries",
    "missing",
    "duplicates",
    "publish_s",
    "consume_s",
    "publish_cpu_us_per_msg",
    "consume_cpu_us_per_msg",
}

Result = tuple[str, dict[str, Any]]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> Result:
    path = tmp_path_factory.mktemp("pubsub") / "pubsub.json"
    sizes = ["--messages", str(MESSAGES), "--embedded-messages", str(MESSAGES), "--hops", str(HOPS)]
    options = [
        *sizes,
        "--consumers",
        ",".join(map(str, CONSUMERS)),
        "--amqp",
        AMQP_URL,
        "--redis",
        REDIS_URL,
    ]
    outcome = CliRunner().invoke(bench, ["pubsub", *options, "--json", str(path)])
    assert outcome.exit_code == 0, outcome.output  # 1 would mean a message lost or delivered twice
    return outcome.output, json.loads(path.read_text())


def _rows(result: Result, impl: str) -> list[dict[str, Any]]:
    """The rows of `impl`; a skipped engine skips the test, or fails it under CI=true."""
    skipped = result[1]["skipped"]
    if impl in skipped:
        if os.environ.get("CI") == "true" or impl == "embedded":
            pytest.fail(f"{impl} skipped: {skipped[impl]}")
        pytest.skip(f"{impl} skipped: {skipped[impl]}")
    return [row for row in result[1]["rows"] if row["impl"] == impl]


@pytest.mark.parametrize("impl", IMPLS)
def test_rows_have_exactly_the_keys_and_sane_figures(result: Result, impl: str) -> None:
    rows = _rows(result, impl)
    assert [row["consumers"] for row in rows] == list(CONSUMERS)
    for row in rows:
        assert set(row) == KEYS
        assert row["publish_per_s"] > 0
        assert row["consume_per_s"] > 0
        assert row["publish_s"] > 0
        assert row["consume_s"] > 0
        assert row["publish_cpu_us_per_msg"] > 0
        assert row["consume_cpu_us_per_msg"] > 0
    one, two = rows
    assert 0 < one["hop_p50_ms"] <= one["hop_p99_ms"] < 1000
    assert two["hop_p50_ms"] is None
    assert two["hop_p99_ms"] is None


@pytest.mark.parametrize("impl", IMPLS)
def test_every_message_is_consumed_exactly_once(result: Result, impl: str) -> None:
    for row in _rows(result, impl):
        assert row["messages"] == MESSAGES
        assert row["deliveries"] == MESSAGES
        assert row["missing"] == 0
        assert row["duplicates"] == 0


def test_the_document_describes_the_run(result: Result) -> None:
    document = result[1]
    assert document["scenario"] == "pubsub"
    assert document["plan"]["messages"] == MESSAGES
    assert document["plan"]["message_bytes"] == 256
    assert document["machine"]["cpu_count"] >= 1


def test_ratios_and_goals_are_printed(result: Result) -> None:
    output = result[0]
    assert "goal embedded publish >= 200,000 msg/s" in output
    assert "goal embedded consume >= 200,000 msg/s" in output
    _rows(result, "wirelab-amqp")
    _rows(result, "aio-pika-bare")
    assert "wirelab-amqp vs aio-pika-bare, 1 consumer: msg/s publish" in output
    assert "goal wirelab-amqp consume >= 1x aio-pika-bare" in output


def test_an_unreachable_engine_is_skipped_without_its_password() -> None:
    sizes = ["--messages", "20", "--embedded-messages", "20", "--hops", "5", "--consumers", "1"]
    where = ["--impls", "embedded,wirelab-amqp", "--amqp", "amqp://guest:s3cret@127.0.0.1:1/"]
    outcome = CliRunner().invoke(bench, ["pubsub", *sizes, *where])
    assert outcome.exit_code == 0, outcome.output
    assert "skipped wirelab-amqp: amqp://127.0.0.1:1/ unreachable" in outcome.output
    assert "s3cret" not in outcome.output


def test_nothing_reachable_is_a_failure() -> None:
    options = ["--impls", "wirelab-redis", "--redis", "redis://127.0.0.1:1/0", "--consumers", "1"]
    outcome = CliRunner().invoke(bench, ["pubsub", *options])
    assert outcome.exit_code == 1
    assert "skipped wirelab-redis" in outcome.output


def test_option_lists_match_the_scenario() -> None:
    assert commands.PUBSUB_IMPLS == IMPLS
    outcome = CliRunner().invoke(bench, ["pubsub", "--consumers", "1,0"])
    assert outcome.exit_code == 2
    assert "comma-separated positive integers" in outcome.output


def test_summary_computes_ratios_and_goals() -> None:
    def row(impl: str, consumers: int, per_s: tuple[float, float], p50: float | None) -> dict[str, Any]:
        return {
            "impl": impl,
            "consumers": consumers,
            "publish_per_s": per_s[0],
            "consume_per_s": per_s[1],
            "publish_cpu_us_per_msg": 1e6 / per_s[0],
            "consume_cpu_us_per_msg": 1e6 / per_s[1],
            "hop_p50_ms": p50,
            "hop_p99_ms": None if p50 is None else 2 * p50,
        }

    rows = [
        row("embedded", 1, (300_000.0, 150_000.0), 0.01),
        row("wirelab-amqp", 1, (1000.0, 5000.0), 0.5),
        row("wirelab-amqp", 2, (1100.0, 6000.0), None),
        row("aio-pika-bare", 1, (1000.0, 4000.0), 0.25),
        row("aio-pika-bare", 2, (1000.0, 8000.0), None),
    ]
    lines = summary(rows)
    assert lines[0] == (
        "wirelab-amqp vs aio-pika-bare, 1 consumer: msg/s publish 1.00x, consume 1.25x; "
        "CPU/msg publish 1.00x, consume 0.80x; hop p50 2.00x, p99 2.00x"
    )
    assert lines[1] == (
        "wirelab-amqp vs aio-pika-bare, 2 consumers: msg/s publish 1.10x, consume 0.75x; "
        "CPU/msg publish 0.91x, consume 1.33x"
    )
    assert "publish >= 1x aio-pika-bare: 1.00 / 1.10x at 1/2 consumers ([green]met" in lines[2]
    assert "publish >= 200,000 msg/s: 300,000 msg/s at 1 consumer ([green]met" in lines[3]
    assert "consume >= 1x aio-pika-bare: 1.25 / 0.75x at 1/2 consumers ([red]not met" in lines[4]
    assert "consume >= 200,000 msg/s: 150,000 msg/s at 1 consumer ([red]not met" in lines[5]

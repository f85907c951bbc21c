"""`wirelab bench upload` end to end, small: every mode stores the same verified image, at its cost."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from wirelab.bench.commands import bench
from wirelab.bench.upload import MODES

pytestmark = pytest.mark.bench

KEYS = {"mode", "mib_per_s", "server_peak_rss_mib", "server_rss_before_mib", "requests", "ratio_vs_single"}


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    path = tmp_path_factory.mktemp("upload") / "upload.json"
    result = CliRunner().invoke(bench, ["upload", "--size", "8MiB", "--json", str(path)])
    assert result.exit_code == 0, result.output
    document = json.loads(path.read_text())
    assert document["scenario"] == "upload"
    assert document["plan"]["size_bytes"] == 8 << 20
    return {row["mode"]: row for row in document["rows"]}


def test_every_mode_stored_the_image_with_its_sha256(rows: dict[str, dict[str, Any]]) -> None:
    assert list(rows) == list(MODES)
    for row in rows.values():
        assert set(row) >= KEYS
        assert row["sha256_ok"] is True, row["mode"]
        assert row["mib_per_s"] > 0
        assert row["server_peak_rss_mib"] >= row["server_rss_before_mib"] > 0


def test_requests_follow_chunks_and_parts(rows: dict[str, dict[str, Any]]) -> None:
    """8 MiB: one POST /images; tus: POST, a PATCH per chunk, the GET that reads the stored sha256."""
    assert rows["single"]["requests"] == 1
    assert rows["tus-1m"]["requests"] == 1 + 8 + 1
    assert rows["tus-8m"]["requests"] == rows["tus-64m"]["requests"] == 1 + 1 + 1
    assert rows["tus-parallel-4"]["requests_by_method"] == {"POST": 4 + 1, "PATCH": 4, "GET": 1}


def test_each_resume_costs_one_head(rows: dict[str, dict[str, Any]]) -> None:
    resumed = rows["tus-resumed-3"]
    assert resumed["resumes"] == 3
    assert resumed["heads_per_resume"] == 1
    assert resumed["requests_by_method"]["POST"] == 1, "every rerun found the upload it had started"
    assert resumed["round_trips_per_resume"] >= 1


def test_ratios_are_to_the_single_request(rows: dict[str, dict[str, Any]]) -> None:
    single = rows["single"]
    assert single["ratio_vs_single"] == 1
    for row in rows.values():
        assert row["ratio_vs_single"] == pytest.approx(row["mib_per_s"] / single["mib_per_s"])

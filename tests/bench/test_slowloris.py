"""The slow-loris bench end to end, small: `wirelab up`, nginx and `wirelab up` without a deadline,
each flooded with 200 slow connections and a 1 s head deadline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import unavailable
from wirelab.bench import slowloris
from wirelab.bench.commands import bench


def test_nginx_gets_the_same_deadline_in_whole_milliseconds(tmp_path: Path) -> None:
    config = slowloris.nginx_config(9001, slowloris.SlowlorisPlan(header_timeout_s=2.5), tmp_path)
    assert "client_header_timeout 2500ms;" in config
    assert "worker_processes 1;" in config
    assert f"client_body_temp_path {tmp_path}/nginx-client_body;" in config


@pytest.mark.bench
def test_the_bench_compares_the_three_servers(tmp_path: Path) -> None:
    if shutil.which("nginx") is None:
        unavailable("nginx is not installed (make peers installs it)")
    out = tmp_path / "slowloris.json"
    result = CliRunner().invoke(
        bench, ["slowloris", "--connections", "200", "--header-timeout", "1", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = {row["impl"]: row for row in json.loads(out.read_text())["rows"]}
    assert list(rows) == list(slowloris.IMPLS)
    for impl in slowloris.DEFENDED:
        assert rows[impl]["cut"] == 200, rows[impl]
        assert 1 <= rows[impl]["last_cut_s"] < 4, rows[impl]
        assert rows[impl]["probe_failures"] == 0
        assert rows[impl]["probe_p99_ms"] > 0
        assert rows[impl]["rss_peak_mib"] > 1
    assert rows["wirelab-no-deadline"]["cut"] == 0
    assert "Slow loris: 200 connections" in result.output

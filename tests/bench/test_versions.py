"""The versions bench end to end, one second per load: every server, every version it speaks, counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import unavailable
from wirelab.bench import versions
from wirelab.bench.commands import bench


def test_each_row_is_compared_with_the_peer_of_its_version_and_transport() -> None:
    def row(impl: str, http: str, transport: str, rate: float) -> dict[str, object]:
        return {"impl": impl, "http": http, "transport": transport, "req_per_s": rate}

    rows = versions._with_ratios(
        [
            row("wirelab", "2", "tls", 50.0),
            row("wirelab", "3", "quic", 30.0),
            row("nginx", "2", "tls", 200.0),
            row("caddy", "3", "quic", 60.0),
            row("caddy", "2", "tls", 100.0),
        ]
    )
    assert [r["ratio_to_peer"] for r in rows] == [0.25, 0.5, None, None, 0.5]
    assert versions.summary(rows)[0] == "wirelab over HTTP/2 (tls): 0.25x nginx's requests/s"


@pytest.mark.bench
def test_the_bench_loads_every_version_of_every_server(tmp_path: Path) -> None:
    missing = versions.missing_peers(versions.IMPLS)
    if missing:
        unavailable("; ".join(missing))
    out = tmp_path / "versions.json"
    result = CliRunner().invoke(bench, ["versions", "--duration", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())["rows"]
    measured = {(row["impl"], row["http"], row["transport"]) for row in rows}
    assert measured == {
        ("wirelab-uvicorn", "1.1", "tcp"),
        *(
            ("wirelab", http, over)
            for http, over in [("1.1", "tcp"), ("2", "tls"), ("2", "tcp"), ("3", "quic")]
        ),
        *(("nginx", http, over) for http, over in [("1.1", "tcp"), ("2", "tls"), ("2", "tcp")]),
        ("caddy", "2", "tls"),
        ("caddy", "3", "quic"),
    }
    for row in rows:
        assert row["req_per_s"] > 100, row
        assert row["cpu_us_per_req"] > 0, row
        assert row["errors"] == 0, row
    assert "wirelab over HTTP/3 (quic)" in result.output

"""The layer 4 balancer bench: HAProxy's configuration, the connection-rate client, the goals, and the
whole bench end to end, small (1 s per load) through `wirelab lb l4`, HAProxy and straight."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers import unavailable
from wirelab.bench import lb
from wirelab.bench.commands import bench


def test_haproxy_is_configured_like_our_balancer() -> None:
    config = lb.haproxy_config(8080, 9001, fd_limit=1 << 20)
    assert "mode tcp" in config
    assert "balance roundrobin" in config
    assert "bind 127.0.0.1:8080" in config
    assert "server b0 127.0.0.1:9001\n" in config  # no `check`: ours runs no health checks by default
    assert "nbthread 1" in config
    assert "maxconn 10000" in config
    assert "timeout connect 2s" in config
    assert "timeout client 300s" in config


def test_haproxy_maxconn_fits_the_descriptor_limit() -> None:
    """HAProxy refuses to start when it cannot have two descriptors per connection."""
    assert "maxconn 9968\n" in lb.haproxy_config(8080, 9001, fd_limit=20_000)


def test_a_missing_peer_names_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    assert lb.missing_peers(lb.IMPLS) == [
        "haproxy not found on PATH: install Debian's haproxy (apt-get install haproxy)",
        "iperf3 not found on PATH: install Debian's iperf3 (apt-get install iperf3)",
    ]
    assert [m.split()[0] for m in lb.missing_peers(("wirelab-splice", "direct"))] == ["iperf3"]


def test_the_command_refuses_to_start_without_its_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    result = CliRunner().invoke(bench, ["lb", "--duration", "1"])
    assert result.exit_code == 1
    assert "apt-get install haproxy" in result.output
    assert "apt-get install iperf3" in result.output


def test_pinning_gives_the_balancer_a_core_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    pinning = lb.Pinning.choose()
    assert (pinning.balancer, pinning.load) == (frozenset({1}), frozenset({0}))
    assert "on core 1" in pinning.describe()
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert lb.Pinning.choose().describe() == "not pinned: fewer than two cores"


def test_the_summary_puts_each_goal_beside_its_ratio() -> None:
    rows: list[dict[str, Any]] = [
        {"impl": "wirelab-splice", "l4_gbit_per_s_vs_haproxy": 0.9, "l4_conn_per_s_vs_haproxy": 0.2},
        {"impl": "wirelab-copy", "l4_gbit_per_s_vs_haproxy": 0.5, "l4_conn_per_s_vs_haproxy": 0.4},
        {"impl": "haproxy"},
    ]
    lines = lb.summary(rows)
    assert "wirelab-splice: throughput 0.900x haproxy (goal ≥ 0.8x: met)" in lines
    assert "wirelab-splice: new connections/s 0.200x haproxy (goal ≥ 0.3x: short)" in lines
    assert "wirelab-copy: new connections/s 0.400x haproxy (goal ≥ 0.3x: met)" in lines
    assert not any(line.startswith("wirelab-copy: throughput") for line in lines)  # the goal is splice's
    costs: list[dict[str, Any]] = [
        {"impl": "wirelab-splice", "l4_conn_balancer_cpu_us": 212.4},
        {"impl": "haproxy"},
    ]
    assert "balancer CPU per new connection: wirelab-splice 212 µs" in lb.summary(costs)
    costs[1]["l4_conn_balancer_cpu_us"] = 53.1
    assert (
        "balancer CPU per new connection: wirelab-splice 212 µs (0.25x haproxy's per core), haproxy 53 µs"
        in lb.summary(costs)
    )


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A threaded echo-once-then-close server, independent of the bench's own backend."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=128)

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(conn.recv(16))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    listener.close()
    thread.join(5)


def test_the_connection_client_counts_echoed_connections(echo_port: int) -> None:
    tally = lb.measure_conn_rate(echo_port, duration_s=0.3, in_flight=4)
    assert tally.done > 0
    assert tally.failed == 0
    assert tally.seconds >= 0.3


def test_the_connection_client_counts_refused_connections_as_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connects are refused
        tally = lb.measure_conn_rate(port, duration_s=0.1, in_flight=2)
    assert tally.done == 0
    assert tally.failed > 0


def test_end_to_end_every_impl_moves_bytes_and_connections(tmp_path: Path) -> None:
    for message in lb.missing_peers(lb.IMPLS):
        unavailable(message)
    out = tmp_path / "lb.json"
    result = CliRunner().invoke(bench, ["lb", "--duration", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "x haproxy" in result.output
    document = json.loads(out.read_text())
    assert document["scenario"] == "lb"
    assert {"cpu_count", "python"} <= document["machine"].keys()
    assert document["plan"] == {"duration_s": 1, "impls": list(lb.IMPLS), "in_flight": lb.IN_FLIGHT}
    rows = {row["impl"]: row for row in document["rows"]}
    assert list(rows) == list(lb.IMPLS)
    for impl, row in rows.items():
        assert row["l4_gbit_per_s"] > 0, impl
        assert row["l4_conn_per_s"] > 0, impl
        assert row["l4_conn_errors"] == 0, impl
    for impl in ("wirelab-splice", "wirelab-copy"):
        assert rows[impl]["l4_gbit_per_s_vs_haproxy"] > 0
        assert rows[impl]["l4_conn_per_s_vs_haproxy"] > 0
    assert "l4_gbit_per_s_vs_haproxy" not in rows["direct"]
    for impl in ("wirelab-splice", "wirelab-copy", "haproxy"):
        assert rows[impl]["l4_bulk_balancer_cpu_pct"] > 0
        assert rows[impl]["l4_conn_balancer_cpu_pct"] > 0
        assert rows[impl]["l4_conn_balancer_cpu_us"] > 0
    assert "l4_conn_balancer_cpu_pct" not in rows["direct"]

"""The balancer bench: HAProxy's and nginx's configurations, the connection-rate and paced HTTP
clients, the goals, and the whole bench end to end, small (1 s per load) through `wirelab lb l4`,
`wirelab lb l7`, HAProxy and straight."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.helpers import unavailable
from wirelab._compiled import compiled
from wirelab.bench import lb, lb_l7
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


def test_haproxy_in_http_mode_keeps_connections_alive_on_both_sides() -> None:
    config = lb.haproxy_config(8080, 9001, fd_limit=1 << 20, mode="http")
    assert "mode http" in config
    assert "option http-keep-alive" in config
    assert "http-reuse always" in config
    assert "nbthread 1" in config
    assert "server b0 127.0.0.1:9001\n" in config
    assert "http-reuse" not in lb.haproxy_config(8080, 9001, fd_limit=1 << 20)
    upstream_h2 = lb.haproxy_config(8080, 9001, fd_limit=1 << 20, mode="http", h2_upstream=True)
    assert "server b0 127.0.0.1:9001 proto h2\n" in upstream_h2


def test_nginx_is_one_worker_answering_ok_with_its_files_in_the_workdir(tmp_path: Path) -> None:
    config = lb_l7.nginx_config(9001, tmp_path)
    assert "daemon off;" in config
    assert "worker_processes 1;" in config
    assert "listen 127.0.0.1:9001;" in config
    assert 'return 200 "ok";' in config
    assert f"pid {tmp_path}/nginx.pid;" in config
    assert "access_log off;" in config
    assert f"proxy_temp_path {tmp_path}/nginx-proxy;" in config
    assert "http2" not in config
    assert "listen 127.0.0.1:9002 http2;" in lb_l7.nginx_config(9001, tmp_path, h2c_port=9002)


def test_haproxy_maxconn_fits_the_descriptor_limit() -> None:
    """HAProxy refuses to start when it cannot have two descriptors per connection."""
    assert "maxconn 9968\n" in lb.haproxy_config(8080, 9001, fd_limit=20_000)


def test_a_missing_peer_names_its_debian_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    assert lb.missing_peers(lb.IMPLS) == [
        "haproxy not found on PATH: install Debian's haproxy (apt-get install haproxy)",
        "iperf3 not found on PATH: install Debian's iperf3 (apt-get install iperf3)",
        "wrk not found on PATH: install Debian's wrk (apt-get install wrk)",
        "nginx not found on PATH: install Debian's nginx (apt-get install nginx)",
        "h2load not found on PATH: install Debian's nghttp2-client (apt-get install nghttp2-client)",
    ]
    assert [m.split()[0] for m in lb.missing_peers(("wirelab-copy", "direct"))] == [
        "iperf3",
        "wrk",
        "nginx",
    ]


def test_the_command_refuses_to_start_without_its_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda tool: None)
    result = CliRunner().invoke(bench, ["lb", "--duration", "1"])
    assert result.exit_code == 1
    assert "apt-get install haproxy" in result.output
    assert "apt-get install iperf3" in result.output
    assert "apt-get install nginx" in result.output


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
    assert not any("L7" in line for line in lb.summary(costs))
    costs[1]["l4_conn_balancer_cpu_us"] = 53.1
    assert (
        "balancer CPU per new connection: wirelab-splice 212 µs (0.25x haproxy's per core), haproxy 53 µs"
        in lb.summary(costs)
    )


def test_the_summary_gives_l7_against_haproxy_and_the_latency_added_over_direct() -> None:
    rows: list[dict[str, Any]] = [
        {"impl": "wirelab-splice", "l7_req_per_s_vs_haproxy": 0.25, "l7_p50_ms": 0.9, "l7_p99_ms": 3.0},
        {"impl": "wirelab-copy"},
        {"impl": "haproxy", "l7_p50_ms": 0.2, "l7_p99_ms": 1.0},
        {"impl": "direct", "l7_p50_ms": 0.15, "l7_p99_ms": 1.5},
    ]
    for row in rows:
        if "l7_p50_ms" in row:
            row["l7_paced_req_per_s"] = 3000.0
    lines = lb.summary(rows)
    assert "wirelab-splice: L7 req/s 0.250x haproxy (goal ≥ 0.3x: short)" in lines
    assert "wirelab-splice: L7 adds p50 +0.75 ms, p99 +1.50 ms over direct at 3,000 req/s" in lines
    assert "haproxy: L7 adds p50 +0.05 ms, p99 -0.50 ms over direct at 3,000 req/s" in lines
    assert not any(line.startswith("wirelab-copy: L7") for line in lines)
    rows[0]["l7_balancer_cpu_us"], rows[2]["l7_balancer_cpu_us"] = 180.0, 12.0
    assert (
        "balancer CPU per L7 request: wirelab-splice 180 µs (0.07x haproxy's per core), haproxy 12 µs"
        in lb.summary(rows)
    )


def test_ratios_skip_rows_without_the_figure() -> None:
    """wirelab-copy has no layer 7 figures: `wirelab lb l7` has one data path."""
    rows = lb._with_ratios(
        [
            {"impl": "wirelab-splice", "l4_gbit_per_s": 2.0, "l4_conn_per_s": 1.0, "l7_req_per_s": 10.0},
            {"impl": "wirelab-copy", "l4_gbit_per_s": 1.0, "l4_conn_per_s": 1.0},
            {"impl": "haproxy", "l4_gbit_per_s": 4.0, "l4_conn_per_s": 2.0, "l7_req_per_s": 40.0},
        ]
    )
    assert rows[0]["l7_req_per_s_vs_haproxy"] == 0.25
    assert rows[1]["l4_gbit_per_s_vs_haproxy"] == 0.25
    assert "l7_req_per_s_vs_haproxy" not in rows[1]


@pytest.fixture
def http_port() -> Iterator[int]:
    """A threaded keep-alive HTTP/1.1 server answering `ok`, independent of nginx."""

    class Ok(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_the_paced_client_sends_at_the_rate_and_times_every_answer(http_port: int) -> None:
    tally = lb_l7.paced_latency_ms(http_port, rate=200, duration_s=0.5, connections=2)
    assert len(tally.latencies_ms) == 100
    assert tally.failed == 0
    assert 0 < tally.p(50) <= tally.p(99)


def test_the_paced_client_counts_refused_requests_as_failed() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connects are refused
        tally = lb_l7.paced_latency_ms(port, rate=100, duration_s=0.1, connections=2)
    assert tally.latencies_ms == ()
    assert tally.failed == 10
    assert tally.p(99) == 0.0


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


def test_end_to_end_every_impl_moves_bytes_connections_and_requests(tmp_path: Path) -> None:
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
    for impl in ("wirelab-splice", "haproxy"):
        assert rows[impl]["l7_balancer_cpu_us"] > 0
    assert "l4_conn_balancer_cpu_pct" not in rows["direct"]
    assert "L7 has one data path" in result.output
    for impl in lb.L7_IMPLS:
        for key in ("l7_req_per_s", "l7_p50_ms", "l7_p99_ms", "l7_paced_req_per_s"):
            assert rows[impl][key] > 0, (impl, key)
        assert rows[impl]["l7_errors"] == 0, impl
    assert rows["wirelab-splice"]["l7_req_per_s_vs_haproxy"] > 0
    assert not any(key.startswith("l7") for key in rows["wirelab-copy"])
    assert len({rows[impl]["l7_paced_req_per_s"] for impl in lb.L7_IMPLS}) == 1  # one rate for all
    for impl in lb.H2_IMPLS:
        assert rows[impl]["l7_h2_req_per_s"] > 0, impl
        assert rows[impl]["l7_h2_errors"] == 0, impl
        assert rows[impl]["l7_h2_balancer_cpu_us"] > 0, impl
        assert rows[impl]["l7_h2_upstream_req_per_s"] > 0, impl
        assert rows[impl]["l7_h2_upstream_errors"] == 0, impl
        assert rows[impl]["l7_h2_upstream_balancer_cpu_us"] > 0, impl
        assert rows[impl]["l7_relayed_req_per_s"] > 0, impl  # the same load at layer 4: the ceiling
        assert rows[impl]["l7_relayed_errors"] == 0, impl
        assert rows[impl]["l7_relayed_balancer_cpu_us"] > 0, impl
    for impl in lb.PARSER_IMPLS:
        assert rows[impl]["l7_python_req_per_s"] > 0, impl
        assert rows[impl]["l7_python_errors"] == 0, impl
        assert rows[impl]["l7_python_balancer_cpu_us"] > 0, impl
        assert rows[impl]["l7_interpreted_req_per_s"] > 0, impl
        assert rows[impl]["l7_interpreted_errors"] == 0, impl
        assert rows[impl]["l7_interpreted_balancer_cpu_us"] > 0, impl
        assert rows[impl]["compiled"] is compiled(), impl
    assert "l7_python_req_per_s" not in rows["haproxy"]
    assert "read by the Python parser" in result.output
    assert "with the protocol modules interpreted" in result.output
    assert rows["wirelab-splice"]["l7_h2_req_per_s_vs_haproxy"] > 0
    assert rows["wirelab-splice"]["l7_h2_upstream_req_per_s_vs_haproxy"] > 0
    assert "l7_h2_req_per_s" not in rows["direct"]
    assert "l7_h2_upstream_req_per_s" not in rows["direct"]
    assert "L7 adds p50" in result.output

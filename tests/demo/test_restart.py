"""`wirelab demo restart`: the counter's protocol alone, then both experiments end to end, small."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from wirelab.demo.counter import MAX_LINE, CounterSession
from wirelab.demo.restart import CounterProcess, RestartPlan, run_stateful, run_stateless
from wirelab.testing import ServerProcess, free_port

SMALL = RestartPlan(increments=4, comments=9, steps=30, step_ms=60, interval_s=0.05)


def test_the_counter_counts_per_session_and_answers_each_line() -> None:
    session = CounterSession()
    session.receive_data(b"INCR\nINC")
    assert session.data_to_send() == b"1\n"
    session.receive_data(b"R\r\nGET\nNOPE\n")
    assert session.data_to_send() == b"2\n2\nERR unknown command; send INCR or GET\n"
    assert session.count == 2 and not session.closing
    assert CounterSession().count == 0  # another connection, another count


def test_the_counter_closes_a_connection_whose_line_is_too_long() -> None:
    session = CounterSession()
    session.receive_data(b"x" * (MAX_LINE + 1))
    assert session.data_to_send() == b"ERR line too long\n" and session.closing


def test_a_restart_loses_the_stateful_count_and_the_client_sees_an_error() -> None:
    counter = CounterProcess(free_port())
    try:
        outcome = asyncio.run(run_stateful(SMALL, counter, lambda text: None))
    finally:
        counter.kill()
    assert outcome.increments_before == 4 and outcome.count_before == 4
    assert outcome.error_type in {"IncompleteReadError", "ConnectionResetError", "BrokenPipeError"}
    assert outcome.count_after_reconnect == 1 and outcome.state_lost


def test_a_restart_of_the_stateless_server_loses_and_doubles_nothing(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    try:
        outcome = asyncio.run(run_stateless(SMALL, server, lambda text: None))
    finally:
        server.kill()
    last = max(outcome.versions)
    assert outcome.versions == tuple(range(1, last + 1)), "every version once, in order"
    assert outcome.version_gaps == 0 and outcome.version_repeats == 0 and outcome.final_state == "done"
    assert 3 <= outcome.version_at_restart < last, "the server restarted while the job ran"
    assert outcome.sse_reconnects >= 1
    assert outcome.comments_before_restart < outcome.comments_intended == 9
    assert outcome.comments_stored == 9
    assert outcome.comment_duplicates == outcome.comments_missing == 0
    assert outcome.intact


def test_the_command_narrates_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "restart.json"
    command = [sys.executable, "-m", "wirelab", "demo", "restart", "--comments", "6", "--json", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "state lost" in result.stdout and "nothing lost, nothing doubled" in result.stdout
    document = json.loads(path.read_text())
    stateful, stateless = document["rows"]
    assert document["demo"] == "restart" and document["plan"]["comments"] == 6
    assert stateful["experiment"] == "stateful" and stateful["state_lost"] is True
    assert stateful["count_before"] == 5 and stateful["count_after_reconnect"] == 1
    assert stateless["experiment"] == "stateless" and stateless["intact"] is True
    assert stateless["comments_intended"] == stateless["comments_stored"] == 6
    assert stateless["version_gaps"] == stateless["version_repeats"] == 0


def test_ctrl_c_stops_the_demo_and_every_child_process() -> None:
    command = [sys.executable, "-m", "wirelab", "demo", "restart"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert demo.stdout is not None
        for line in demo.stdout:
            if "wirelab up on" in line:
                break
        children = psutil.Process(demo.pid).children(recursive=True)
        assert children, "the stateless server runs as a child"
        demo.send_signal(signal.SIGINT)  # to the demo alone: it must stop its children itself
        output = demo.communicate(timeout=30)[0]
        assert demo.returncode == 130, output
        assert "interrupted" in output
        assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


@pytest.mark.parametrize("args", [["demo", "--help"], ["demo", "restart", "--help"]])
def test_help_is_there_and_instant(args: list[str]) -> None:
    result = subprocess.run([sys.executable, "-m", "wirelab", *args], capture_output=True, text=True)
    assert result.returncode == 0 and "restart" in result.stdout
    modules = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "wirelab", *args], capture_output=True, text=True
    ).stderr
    assert "wirelab.demo.restart" not in modules and "httpx" not in modules

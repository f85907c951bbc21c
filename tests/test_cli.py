"""The `wirelab` command as a user runs it: help, configuration errors, submit and watch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from wirelab.testing import ServerProcess, free_port

WIRELAB = [sys.executable, "-m", "wirelab"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WIRELAB, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})}
    )


def test_help_lists_every_command() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for command in ("up", "submit", "watch", "upload", "bench"):
        assert f"  {command}" in result.stdout


def test_a_bad_setting_is_a_usage_error_naming_it(tmp_path: Path) -> None:
    result = _run("up", "--port", "70000", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "port" in result.stderr
    result = _run("up", "--workers", "0", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "workers" in result.stderr


def test_an_http_version_out_of_the_list_is_a_usage_error(tmp_path: Path) -> None:
    result = _run("up", "--http", "1.1,4", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "4 unknown: choose among 1.1, 2, 3" in result.stderr
    result = _run("up", "--http", "1.0", "--data-dir", str(tmp_path))
    assert result.returncode == 2 and "HTTP/1.0 requests are answered wherever 1.1 is" in result.stderr


def test_settings_come_from_the_environment_too(tmp_path: Path) -> None:
    port = free_port()
    env = {"WIRELAB_PORT": str(port), "WIRELAB_DATA_DIR": str(tmp_path / "data"), "WIRELAB_UP_WORKERS": "2"}
    process = subprocess.Popen([*WIRELAB, "up"], env={**os.environ, **env}, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert (tmp_path / "data" / "wirelab.db").exists()
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=15)
    assert process.returncode == 0
    assert f"http://127.0.0.1:{port}/jobs" in err.decode()  # it printed what it serves


def test_submit_watch_and_exit_codes(server: ServerProcess) -> None:
    for via in ("short", "long", "sse", "ws"):
        result = _run(
            "submit",
            "--url",
            server.url,
            "--steps",
            "3",
            "--step-ms",
            "20",
            "--watch",
            "--via",
            via,
            "--interval",
            "0.05",
        )
        assert result.returncode == 0, (via, result.stderr)
        assert ": done" in result.stderr
    running = _run("submit", "--url", server.url, "--steps", "100", "--step-ms", "100")
    job_id = json.loads(running.stdout)["id"]
    assert _run("watch", job_id, "--url", server.url, "--via", "get").returncode == 75
    httpx.delete(f"{server.url}/jobs/{job_id}")
    assert _run("watch", job_id, "--url", server.url, "--via", "sse").returncode == 1
    missing = _run("watch", "0123456789abcdef", "--url", server.url)
    assert missing.returncode == 1 and "404" in missing.stderr
    unreachable = _run("watch", "x", "--url", f"http://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr


def test_serve_and_workers_refuse_the_embedded_broker() -> None:
    from click.testing import CliRunner

    from wirelab.cli import main

    for args in (["serve"], ["worker", "demo"]):
        result = CliRunner().invoke(main, [*args, "--broker", "memory"])
        assert result.exit_code == 2 and "shared broker" in result.output

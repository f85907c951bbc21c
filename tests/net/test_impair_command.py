"""`wirelab impair` as a user runs it: a real process, a real upstream, Ctrl-C, and its refusals."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

WIRELAB = [sys.executable, "-m", "wirelab"]


@contextmanager
def echo_server() -> Iterator[int]:
    """A blocking one-connection-at-a-time echo server on a thread."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(65536):
                    conn.sendall(data)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        listener.close()
        thread.join(5)


@contextmanager
def impair(*args: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    process = subprocess.Popen([*WIRELAB, "impair", *args], stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()
        match = re.search(r"listening on 127\.0\.0\.1:(\d+)", first)
        assert match, first
        yield process, int(match[1])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_it_delays_each_way_logs_each_connection_and_stops_cleanly_on_ctrl_c() -> None:
    with echo_server() as port:
        args = ("--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{port}", "--delay", "20ms")
        with impair(*args) as (process, proxy_port):
            with socket.create_connection(("127.0.0.1", proxy_port)) as client:
                started = time.perf_counter()
                client.sendall(b"hello")
                assert client.recv(5) == b"hello"
                assert time.perf_counter() - started >= 0.040 - 0.001
            time.sleep(0.1)  # the connection's end reaches the proxy
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert re.search(r"127\.0\.0\.1:\d+: closed after [\d.]+s, 5 bytes up, 5 down", err), err
    assert "stopped" in err


def test_a_port_in_use_is_an_error_not_a_traceback() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*WIRELAB, "impair", "--listen", f"127.0.0.1:{port}", "--upstream", "127.0.0.1:1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--loss", "1%"], "network namespace"),
        (["--delay", "50"], "a duration is a number with a unit"),
        (["--rate", "10mb"], "10mbit"),
        (["--udp", "--loss", "150%"], "0% to 100%"),
    ],
)
def test_bad_values_are_usage_errors_that_say_why(args: list[str], message: str) -> None:
    result = subprocess.run(
        [*WIRELAB, "impair", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert message in result.stderr

"""websocat, a command-line WebSocket client written in Rust, against /ws/echo and /ws."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.helpers import create_job, wait_done
from tests.interop.interop_peers import peer_tool
from wirelab.testing import ServerProcess

pytestmark = pytest.mark.interop


def websocat(*args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [peer_tool("websocat"), *args], input=stdin, capture_output=True, timeout=15, check=False
    )


def test_echo_a_line(server: ServerProcess) -> None:
    """RFC 6455 §5.6: `echo hi | websocat -1 URL` sends one text message and prints its echo."""
    done = websocat("-1", f"ws://127.0.0.1:{server.port}/ws/echo", stdin=b"hi\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"hi\n"


def test_echo_binary(server: ServerProcess) -> None:
    """RFC 6455 §5.6: a binary message (-b) comes back byte for byte, NUL and 0xFF included."""
    payload = b"bin\x00\xff\x80"
    done = websocat("-1", "-b", f"ws://127.0.0.1:{server.port}/ws/echo", stdin=payload)
    assert done.returncode == 0, done.stderr
    assert done.stdout == payload


def test_subscribe_from_the_command_line(server: ServerProcess) -> None:
    """RFC 6455 §5.6: one subscribe line typed into websocat brings the whole finished job back."""
    job = create_job(server.url, steps=2, step_ms=0)
    final = wait_done(server.url, job["id"])["version"]
    subscribe = json.dumps({"op": "subscribe", "topic": f"jobs/{job['id']}", "after": 0})
    url = f"ws://127.0.0.1:{server.port}/ws"
    done = websocat("-n", "--max-messages-rev", str(final), url, stdin=subscribe.encode() + b"\n")
    assert done.returncode == 0, done.stderr
    messages = [json.loads(line) for line in done.stdout.splitlines()]
    assert [m["version"] for m in messages] == list(range(1, final + 1))
    assert messages[-1]["event"] == "done"

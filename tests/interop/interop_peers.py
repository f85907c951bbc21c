"""Third-party peers as the interop tests drive them: tools found by name, Node clients over JSON lines.

Theory of operation: a Node peer (tests/interop/js/) prints one JSON object per line for each thing it
saw and obeys JSON commands on stdin, so a test reads what the independent client observed, with a
deadline on every read. A peer that is missing skips the test locally and fails it in CI;
`bash .ci/peers.sh` installs every peer.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.helpers import unavailable

__all__ = [
    "JS",
    "NODE_MODULES",
    "JsonLinesPeer",
    "Record",
    "peer_tool",
]

HERE = Path(__file__).parent
JS = HERE / "js"
NODE_MODULES = HERE / "node_modules"

Record = dict[str, Any]


def peer_tool(name: str) -> str:
    """A peer's executable, looked up beside this interpreter first (pip installs) and then on PATH."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    path = shutil.which(name, path=search)
    if path is None:
        unavailable(f"{name} is not installed (bash .ci/peers.sh installs it)")
    assert path is not None
    return path


class JsonLinesPeer:
    """A client in a child process printing JSON lines; every read has a deadline."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self._records: queue.Queue[Record | None] = queue.Queue()
        self._errors: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self._records.put(json.loads(line))
            except json.JSONDecodeError:
                self._records.put({"type": "unparsed", "line": line})
        self._records.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._errors.extend(self.process.stderr)

    def send(self, command: Record) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def next(self, *, timeout: float = 10.0) -> Record:
        try:
            record = self._records.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.argv[1]} said nothing for {timeout}s{self.stderr()}") from None
        if record is None:
            self._records.put(None)
            raise AssertionError(f"{self.argv[1]} exited ({self.process.wait(5)}){self.stderr()}")
        return record

    def until(self, done: Callable[[Record], bool], *, timeout: float = 10.0) -> list[Record]:
        """Every record up to and including the first for which `done` is true."""
        deadline = time.monotonic() + timeout
        seen: list[Record] = []
        while True:
            seen.append(self.next(timeout=max(deadline - time.monotonic(), 0.01)))
            if done(seen[-1]):
                return seen

    def during(self, seconds: float) -> list[Record]:
        """Every record that arrives within the next `seconds`."""
        deadline = time.monotonic() + seconds
        seen: list[Record] = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                record = self._records.get(timeout=left)
            except queue.Empty:
                break
            if record is None:
                self._records.put(None)
                break
            seen.append(record)
        return seen

    def stderr(self) -> str:
        text = "".join(self._errors).strip()
        return f"; stderr: {text[-2000:]}" if text else ""

    def close(self) -> int:
        """Close stdin (the peer then closes its connection and exits); kill it if it lingers."""
        assert self.process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.process.stdin.close()
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        for reader in self._readers:
            reader.join(timeout=5)
        for stream in (self.process.stdout, self.process.stderr):
            assert stream is not None
            stream.close()
        return code

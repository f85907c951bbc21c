"""A swarm of lean subscribers in a child process, driven by the bench over a pipe of JSON lines.

Theory of operation: the fan-out bench must not be limited by its own clients, so the subscribers
live in one or more child processes (`python -m wirelab.bench.swarm`), each on its own uvloop
event loop, where the scheduler can give it a core the server is not using. The parent
(`SwarmProcess`) writes one command per line on the child's stdin and reads one reply per line from
its stdout; progress lines may come before a reply.

    {"op": "connect", "port": P, "kinds": ["sse", "ws", ...], "after": V, "batch": B}
        -> {"progress": n} after each batch, then {"connected": n, "failed": f, "errors": {...}}
    {"op": "await", "version": V, "seconds": S}  -> {"version": V, "received": n}
    {"op": "report"}                              -> the tally: latencies, first publish, last receipt
    {"op": "close"}                               -> {"closed": n}, and the child exits

The child ignores SIGINT (Ctrl-C reaches the whole process group): the parent decides when it ends,
by "close", by closing the pipe, or, as a last resort, by killing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from wirelab.bench.lean import Sub, Tally, subscriber
from wirelab.net.loop import runner

__all__ = ["Swarm", "SwarmProcess", "main"]

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
PIPE_LIMIT = 64 << 20


class Swarm:
    """The subscribers of one process, and the commands that act on them."""

    def __init__(self) -> None:
        self.tally = Tally()
        self.subs: list[Sub] = []
        self.failures: Counter[str] = Counter()

    async def handle(
        self, command: dict[str, Any], emit: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        op = command["op"]
        if op == "connect":
            return await self.connect(command, emit)
        if op == "await":
            received = await self.tally.wait_version(command["version"], command["seconds"])
            return {"version": command["version"], "received": received}
        if op == "report":
            return self.report()
        if op == "close":
            return {"closed": self.close()}
        raise ValueError(f"unknown op {op!r}")

    async def connect(
        self, command: dict[str, Any], emit: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        kinds: list[str] = command["kinds"]
        batch: int = command["batch"]
        for start in range(0, len(kinds), batch):
            await asyncio.gather(
                *(
                    self._open(kind, command["port"], command["after"])
                    for kind in kinds[start : start + batch]
                )
            )
            emit({"progress": len(self.subs) + self.failures.total()})
        self.tally.expected = len(self.subs)
        return {"connected": len(self.subs), "failed": self.failures.total(), "errors": dict(self.failures)}

    async def _open(self, kind: str, port: int, after: int) -> None:
        loop = asyncio.get_running_loop()
        host = f"{HOST}:{port}"
        try:
            _, sub = await loop.create_connection(
                lambda: subscriber(kind, self.tally, host, after), HOST, port
            )
        except OSError as exc:
            self.failures[f"{kind}: {type(exc).__name__}"] += 1
            return
        try:
            async with asyncio.timeout(READY_TIMEOUT_S):
                await sub.ready
        except TimeoutError:
            reason = f"{kind}: not ready in {READY_TIMEOUT_S:g}s"
        except ConnectionError as exc:
            reason = str(exc)
        else:
            self.subs.append(sub)
            return
        self.failures[reason] += 1
        sub.close()

    def report(self) -> dict[str, Any]:
        tally = self.tally
        return {
            "latencies_ms": tally.latencies_ms,
            "first_at": tally.first_at if tally.latencies_ms else None,
            "last_receipt": tally.last_receipt if tally.latencies_ms else None,
            "per_version": {str(v): n for v, n in sorted(tally.per_version.items())},
            "errors": dict(tally.errors),
        }

    def close(self) -> int:
        for sub in self.subs:
            sub.close()
        return len(self.subs)


# -- the child side --------------------------------------------------------------------------------


def main() -> None:
    """Entry point of the child process: `python -m wirelab.bench.swarm LOG_PATH`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with (
        open(sys.argv[1], "a") as log,
        contextlib.redirect_stderr(log),
        runner() as loop,
    ):
        loop.run(_serve(sys.stdout))


async def _serve(out: IO[str]) -> None:
    def emit(message: dict[str, Any]) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    reader = await _stdin_reader()
    swarm = Swarm()
    try:
        while line := await reader.readline():
            command = json.loads(line)
            emit(await swarm.handle(command, emit))
            if command["op"] == "close":
                break
    finally:
        swarm.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks


async def _stdin_reader() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=PIPE_LIMIT)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


# -- the parent side -------------------------------------------------------------------------------


class SwarmProcess:
    """The parent's handle on one swarm child; use `async with`, which always ends the child."""

    def __init__(self, log_path: Path) -> None:
        self._log_path = log_path
        self._process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        return self._require().pid

    async def __aenter__(self) -> SwarmProcess:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wirelab.bench.swarm",
            str(self._log_path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=PIPE_LIMIT,
        )
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def request(
        self, command: dict[str, Any], on_progress: Callable[[int], None] | None = None
    ) -> dict[str, Any]:
        """Send a command and return its reply, passing progress lines to `on_progress`."""
        process = self._require()
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(command).encode() + b"\n")
        await process.stdin.drain()
        while line := await process.stdout.readline():
            message: dict[str, Any] = json.loads(line)
            if "progress" not in message:
                return message
            if on_progress is not None:
                on_progress(message["progress"])
        raise ConnectionError(f"the swarm process exited; see {self._log_path}")

    async def close(self, seconds: float = 30.0) -> None:
        """Ask the child to close its sockets and exit; kill it if it does not."""
        process = self._process
        if process is None:
            return
        if process.returncode is None and process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.write(b'{"op": "close"}\n')
                process.stdin.close()
        try:
            async with asyncio.timeout(seconds):
                await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
        finally:
            self._process = None

    def _require(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise RuntimeError("the swarm process is not running")
        return self._process


if __name__ == "__main__":
    main()

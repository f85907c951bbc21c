"""The fan-out peer: the `websockets` library's own server sending with `broadcast()`, as a child process.

Theory of operation: to say how good our fan-out is we run, in the same bench, the simplest fast
thing the ecosystem offers: `websockets.asyncio.server.serve(compression=None)` keeping a set of
subscribed connections and writing one message to all of them with `websockets.broadcast`, which
frames and writes synchronously, with no task or await per connection. It speaks our push protocol
closely enough for the same lean clients: a client sends one subscribe message (any text) on `/ws`
and from then on receives `{"topic","version","event","data": {"user","at","version"}}`, built by
the same encoder as our server's, with `at` read from the wall clock just before the broadcast.

The websockets server answers only GET, so its control channel is two plain GET routes answered from
`process_request` before any WebSocket handshake:

    GET /publish?user=NAME  -> {"topic": "logins", "version": V}   (after broadcasting V)
    GET /stats              -> {"subscribers": N}

`PeerProcess` starts it with `python -m wirelab.bench.peer --port P` and stops it with SIGTERM; it
ignores SIGINT, so a Ctrl-C meant for the bench does not pull it away while the bench cleans up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

import httpx
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from wirelab.net.loop import runner
from wirelab.proto.pushwire import encode_entry

__all__ = ["PeerProcess", "PeerServer", "main"]

TOPIC = "logins"


class PeerServer:
    """The subscribers, the version counter, and the two control routes."""

    def __init__(self) -> None:
        self.subscribers: set[ServerConnection] = set()
        self.version = 0

    async def handler(self, ws: ServerConnection) -> None:
        """A subscriber counts once its subscribe message arrived; then it just stays connected."""
        try:
            await ws.recv()
        except ConnectionClosed:
            return
        self.subscribers.add(ws)
        try:
            await ws.wait_closed()
        finally:
            self.subscribers.discard(ws)

    def control(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path == "/publish":
            user = parse_qs(url.query).get("user", ["anonymous"])[0]
            body = {"topic": TOPIC, "version": self.publish(user)}
        elif url.path == "/stats":
            body = {"subscribers": len(self.subscribers)}
        else:
            return None  # carry on with the WebSocket handshake
        return connection.respond(200, json.dumps(body) + "\n")

    def publish(self, user: str) -> int:
        self.version += 1
        data = json.dumps({"user": user, "at": time.time(), "version": self.version}, separators=(",", ":"))
        broadcast(self.subscribers, encode_entry(TOPIC, self.version, "login", data))
        return self.version


async def run(port: int) -> None:
    peer = PeerServer()
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_signal_handler(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench decides when we stop (SIGTERM)
    async with serve(peer.handler, "127.0.0.1", port, compression=None, process_request=peer.control):
        print(f"websockets broadcast peer on ws://127.0.0.1:{port}/ws", flush=True)
        await stop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    with runner() as loop:
        loop.run(run(port))


class PeerProcess:
    """Run the peer as a child process on `port`, like `wirelab.testing.ServerProcess` runs ours."""

    def __init__(self, port: int, *, log_path: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("the peer is not started")
        return self._process.pid

    def __enter__(self) -> PeerProcess:
        command = [sys.executable, "-m", "wirelab.bench.peer", "--port", str(self.port)]
        with open(self._log_path, "ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self._wait_ready(timeout=20.0)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(20.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_ready(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"the peer exited at start; see {self._log_path}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/stats", timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the peer did not answer within {timeout}s; see {self._log_path}")


if __name__ == "__main__":
    main()

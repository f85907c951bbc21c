"""Lean subscribers of the logins topic: one asyncio Protocol per connection, no tasks, no libraries.

Theory of operation: each subscriber is a Protocol that writes its opening request from
`connection_made` and then only reacts to `data_received`, feeding the sans-I/O parsers of
`wirelab.proto` (HTTP/1.1 responses, WebSocket frames, SSE). An idle subscriber is therefore a transport, a
protocol object and a small buffer: the load generator stays far cheaper per connection than the
server it measures.

- `SSESub` sends `GET /topics/logins/events` with Last-Event-ID, then decodes the chunked event stream.
- `WSSub` upgrades `GET /ws`, subscribes with a masked text frame and answers pings with pongs.
- `LongSub` sends `GET /topics/logins?after=V&wait=S` on one keep-alive connection, again after each
  answer, with the version it last saw.

Every delivery lands in the process's `Tally`, stamped with the wall clock when its bytes arrived;
latency is that stamp minus the event's `at` (the publisher's wall clock: same machine, same clock).
The Tally counts deliveries per version, so the coordinator can wait until everyone has a version.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import time
from collections import Counter
from typing import Any, cast

from wirelab.bench.wire import http_get, ws_handshake
from wirelab.errors import ProtocolError
from wirelab.proto.http1 import Data, EndOfMessage, Response, ResponseEvent, ResponseParser
from wirelab.proto.pushwire import encode_subscribe
from wirelab.proto.sse import ServerSentEvent, SSEDecoder
from wirelab.proto.wsframe import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameReader, accept_key, encode_frame

__all__ = ["KINDS", "LongSub", "SSESub", "Sub", "Tally", "WSSub", "subscriber"]

TOPIC = "logins"
LONG_WAIT_S = 60


class Tally:
    """Deliveries of one client process: latencies, counts per version, first publish, last receipt."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.per_version: Counter[int] = Counter()
        self.first_at = math.inf
        self.last_receipt = 0.0
        self.errors: Counter[str] = Counter()
        self.expected = 0
        self._complete: dict[int, asyncio.Future[None]] = {}

    def record(self, version: int, at: float, received: float) -> None:
        self.latencies_ms.append((received - at) * 1000)
        self.first_at = min(self.first_at, at)
        self.last_receipt = max(self.last_receipt, received)
        self.per_version[version] += 1
        if self.per_version[version] >= self.expected:
            waiter = self._complete.get(version)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    async def wait_version(self, version: int, seconds: float) -> int:
        """Wait until every subscriber has `version` (or `seconds` pass); how many have it."""
        if self.per_version[version] < self.expected:
            waiter = self._complete.setdefault(version, asyncio.get_running_loop().create_future())
            try:
                async with asyncio.timeout(seconds):
                    await waiter
            except TimeoutError:
                pass
        return self.per_version[version]


class Sub(asyncio.Protocol):
    """What the three kinds share: the transport, the last version seen, readiness, the tally."""

    kind = ""

    def __init__(self, tally: Tally, host: str, after: int) -> None:
        self.tally = tally
        self.host = host
        self.seen = after
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.head: Response | None = None
        self._parser = ResponseParser()
        self._closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.opening())

    def opening(self) -> bytes:
        raise NotImplementedError

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self._closing:
            self._fail(f"{self.kind}: connection lost")

    def data_received(self, data: bytes) -> None:
        try:
            self.receive(data, time.time())
        except (ProtocolError, ValueError, KeyError) as exc:
            self._fail(f"{self.kind}: {type(exc).__name__}")
            self.close()

    def receive(self, data: bytes, now: float) -> None:
        raise NotImplementedError

    def deliver(self, message: dict[str, Any], now: float) -> None:
        """Count a login once, by version, however many times a transport shows it."""
        version = message["version"]
        if version > self.seen:
            self.seen = version
            self.tally.record(version, message["at"], now)

    def close(self) -> None:
        self._closing = True
        if self.transport is not None:
            self.transport.close()

    def _became_ready(self) -> None:
        if not self.ready.done():
            self.ready.set_result(None)

    def _fail(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(reason))
            self.ready.exception()  # the batch that awaits it reads the outcome itself
        else:
            self.tally.errors[reason] += 1

    def _responses(self, data: bytes, status: int) -> list[ResponseEvent]:
        """The response events `data` completes; a response of another status is a failure."""
        events = self._parser.receive_data(data)
        for event in events:
            if isinstance(event, Response):
                if event.status != status:
                    raise ProtocolError(f"status {event.status}, expected {status}")
                self.head = event
        return events


class SSESub(Sub):
    kind = "sse"

    def __init__(self, tally: Tally, host: str, after: int) -> None:
        super().__init__(tally, host, after)
        self._events = SSEDecoder()

    def opening(self) -> bytes:
        headers = (("Accept", "text/event-stream"), ("Last-Event-ID", str(self.seen)))
        return http_get(self.host, f"/topics/{TOPIC}/events", headers)

    def receive(self, data: bytes, now: float) -> None:
        for event in self._responses(data, 200):
            if isinstance(event, Response):
                self._became_ready()
            elif isinstance(event, Data):
                for item in self._events.receive_data(event.data):
                    if isinstance(item, ServerSentEvent):
                        self.deliver(json.loads(item.data), now)


class WSSub(Sub):
    kind = "ws"

    def __init__(self, tally: Tally, host: str, after: int) -> None:
        super().__init__(tally, host, after)
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._frames: FrameReader | None = None

    def opening(self) -> bytes:
        return ws_handshake(self.host, "/ws", self._key)

    def receive(self, data: bytes, now: float) -> None:
        if self._frames is None:
            self._responses(data, 101)
            if not self._parser.tunnel:
                return
            if self.head is None or self.head.values(b"sec-websocket-accept") != [
                accept_key(self._key).encode()
            ]:
                raise ProtocolError("wrong Sec-WebSocket-Accept")
            self._frames = FrameReader()
            self._send(OP_TEXT, encode_subscribe(TOPIC, self.seen).encode())
            self._became_ready()
            data = self._parser.trailing_data
        for frame in self._frames.receive_data(data):
            if frame.opcode == OP_TEXT:
                self.deliver(json.loads(frame.payload)["data"], now)
            elif frame.opcode == OP_PING:
                self._send(OP_PONG, frame.payload)
            elif frame.opcode == OP_CLOSE:
                self._send(OP_CLOSE, frame.payload[:2])
                self.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None:
            self.transport.write(encode_frame(opcode, payload, mask_key=os.urandom(4)))


class LongSub(Sub):
    kind = "long"

    def __init__(self, tally: Tally, host: str, after: int) -> None:
        super().__init__(tally, host, after)
        self._body = bytearray()

    def opening(self) -> bytes:
        return http_get(self.host, f"/topics/{TOPIC}?after={self.seen}&wait={LONG_WAIT_S}")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._became_ready()  # the server answers only when there is news

    def receive(self, data: bytes, now: float) -> None:
        for event in self._responses(data, 200):
            if isinstance(event, Data):
                self._body += event.data
            elif isinstance(event, EndOfMessage):
                body, self._body = bytes(self._body), bytearray()
                self.deliver(json.loads(body), now)
                if self.transport is not None:
                    self.transport.write(self.opening())


KINDS: dict[str, type[Sub]] = {"sse": SSESub, "ws": WSSub, "long": LongSub}


def subscriber(kind: str, tally: Tally, host: str, after: int) -> Sub:
    return KINDS[kind](tally, host, after)

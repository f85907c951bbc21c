"""Limits on every HTTP connection the service accepts: what a hostile or broken client cannot hold.

Theory of operation. uvicorn's HTTP/1.1 protocol (httptools) bounds none of these, so a few thousand
connections trickling half a request head would hold the process's file descriptors for as long as
they trickle. We subclass that protocol and add, per connection:

- a head deadline: a request head must arrive whole within `header_timeout_s` of its first byte
  (of the connection, for the first request); cut with 408, or silently if nothing came at all;
- a head size limit: 431 past `max_head_bytes` of request line and fields;
- a body progress deadline: a body that stops arriving for `body_timeout_s` is cut, and the handler
  sees the client leave (a tus PATCH keeps what arrived). The clock stops while *we* are not reading
  (the handler is busy), so a slow server never blames its client;
- the keep-alive idle timeout is uvicorn's own (`idle_timeout_s`);
- a cap on open connections, WebSockets included: past it, a new connection is answered 503
  problem+json with Retry-After at once, before it can send anything.

Long-lived responses (SSE, long polls) and upgraded WebSockets are not touched: once a request's head
and body are in, no deadline here runs until the next request starts; they have their own heartbeats.
Refusals and cuts are logged once per burst (`Burst`), never once per connection, so a flood cannot
also flood the log.

We chose uvicorn's protocol over the lab's own HTTP/1.1 server connection because the service runs on
uvicorn today; the deadlines are the same `ConnectionLimits` whichever server carries them.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import resource
from dataclasses import dataclass, field
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wirelab.errors import (
    BadRequest,
    ConfigError,
    HeadersTooLarge,
    ProblemError,
    RequestTimeout,
    ServiceUnavailable,
)
from wirelab.http.problem import problem_response

__all__ = [
    "Burst",
    "ConnectionLimits",
    "Guard",
    "GuardedHttpProtocol",
    "default_max_connections",
]

log = logging.getLogger("wirelab.http")

RETRY_AFTER_S = 1
LINGER_S = 1.0
"""How long a refused connection is read (and discarded) after its answer, so that closing with
unread input does not reset the connection and destroy the answer before the client reads it."""


def default_max_connections() -> int:
    """80% of this process's open-file limit (as HAProxy derives maxconn from `ulimit -n`): the
    rest stays for the store, uploads, logs and the refusals' own brief sockets."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1_000_000 if soft == resource.RLIM_INFINITY else max(16, soft * 4 // 5)


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    idle_timeout_s: int = 5
    """Whole seconds: uvicorn's keep-alive timer takes an int."""
    body_timeout_s: float = 30.0
    max_head_bytes: int = 32 * 1024
    max_connections: int = field(default_factory=default_max_connections)

    def __post_init__(self) -> None:
        checks = [
            ("header_timeout_s", 0 < self.header_timeout_s <= 3600, "more than 0, at most 3600"),
            ("idle_timeout_s", 0 < self.idle_timeout_s <= 3600, "more than 0, at most 3600"),
            ("body_timeout_s", 0 < self.body_timeout_s <= 3600, "more than 0, at most 3600"),
            ("max_head_bytes", 1024 <= self.max_head_bytes <= 1 << 20, "1 KiB to 1 MiB"),
            ("max_connections", 1 <= self.max_connections <= 1_000_000, "1 to 1000000"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"{name} = {getattr(self, name)!r}: expected {expected}")


class Burst:
    """Counts events of one kind and says when to log them: at the first of a burst, and once the
    burst has been quiet for `quiet_s`, its total. Time is passed in."""

    def __init__(self, quiet_s: float = 5.0) -> None:
        self.quiet_s = quiet_s
        self.count = 0
        self._last = 0.0

    def hit(self, now: float) -> bool:
        """Count one; True when it begins a burst (log it now)."""
        self.count += 1
        self._last = now
        return self.count == 1

    def end(self, now: float) -> int | None:
        """The burst's total if it is over (and start counting afresh), else None."""
        if self.count == 0 or now - self._last < self.quiet_s:
            return None
        total, self.count = self.count, 0
        return total


class Guard:
    """What every connection of one server shares: the limits and the burst counters of the log."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._bursts: dict[str, Burst] = {}
        self._flush: asyncio.TimerHandle | None = None

    def protocol_factory(self) -> Any:
        """uvicorn's `http=` setting: our protocol class, bound to this guard."""
        return functools.partial(GuardedHttpProtocol, guard=self)

    def note(self, what: str, detail: str) -> None:
        """Count one event of kind `what` ("refused connections", ...); log the first of a burst."""
        loop = asyncio.get_running_loop()
        burst = self._bursts.setdefault(what, Burst())
        if burst.hit(loop.time()):
            log.warning("%s: %s (further ones are counted until it stops)", what, detail)
        if self._flush is None:
            self._flush = loop.call_later(burst.quiet_s, self._report)

    def _report(self) -> None:
        loop = asyncio.get_running_loop()
        self._flush = None
        for what, burst in self._bursts.items():
            total = burst.end(loop.time())
            if total is not None:
                log.warning("%s: %d in the last burst", what, total)
            elif burst.count:
                self._flush = loop.call_later(burst.quiet_s, self._report)


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop a head over the limit; uvicorn then calls
    `send_400_response`, where the refusal recorded beside it is answered instead."""


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with the deadlines and caps of `ConnectionLimits`."""

    def __init__(self, *args: Any, guard: Guard, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.limits = guard.limits
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_started = False
        self._refusal: ProblemError | None = None
        self._body_seen = 0.0

    # The connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of it
        if len(self.connections) >= self.limits.max_connections:
            self.guard.note("refused connections", f"{len(self.connections)} open, at the cap")
            _Refused(transport)
            return
        super().connection_made(transport)
        self._arm(self.limits.header_timeout_s, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        self._disarm()  # the WebSocket protocol takes the connection, with its own limits
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self._answer(self._refusal or BadRequest(f"the request is not valid HTTP/1.1: {msg}"))

    # The head

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._head_started = True
        if self._timer is None:
            self._arm(self.limits.header_timeout_s, self._head_late)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_head_bytes:
            self._refusal = HeadersTooLarge(
                f"the request head is over the {self.limits.max_head_bytes}-byte limit"
            )
            raise _HeadTooLarge()

    def _head_late(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if not self._head_started:
            self.transport.close()  # nothing came: a silent connection is closed, not answered
            return
        self.guard.note("cut slow request heads", f"not whole after {self.limits.header_timeout_s} s")
        self._answer(RequestTimeout(f"the request head took over {self.limits.header_timeout_s} s"))

    # The body

    def on_headers_complete(self) -> None:
        self._disarm()
        self._head_started = False
        self._body_seen = self.loop.time()
        self._arm(self.limits.body_timeout_s, self._body_late)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_seen = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _body_late(self) -> None:
        """Cut a body that made no progress for the deadline, unless we are the ones not reading."""
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            self._body_seen = now
        left = self._body_seen + self.limits.body_timeout_s - now
        if left > 0:
            self._arm(left, self._body_late)
            return
        self.guard.note("cut stalled request bodies", f"no bytes for {self.limits.body_timeout_s} s")
        self.transport.close()  # the handler sees the client leave, and keeps what arrived

    # Timers and answers

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _answer(self, error: ProblemError) -> None:
        self._disarm()
        self.transport.write(_answer_bytes(error))
        self.transport.close()


def _answer_bytes(error: ProblemError) -> bytes:
    fields = [(name.encode(), value.encode()) for name, value in error.headers.items()]
    return problem_response(error.status, error.detail, headers=fields)


class _Refused(asyncio.Protocol):
    """A connection over the cap: answered 503 at once, half-closed, then read and discarded until
    the client closes or LINGER_S passes. Closing with the client's request unread would reset the
    connection, and a reset can destroy the answer before the client reads it."""

    ANSWER = _answer_bytes(
        ServiceUnavailable(
            "the server is at its connection limit; try again shortly",
            headers={"retry-after": str(RETRY_AFTER_S)},
        )
    )

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.set_protocol(self)
        transport.write(self.ANSWER)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self.transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()

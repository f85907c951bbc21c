"""A circuit breaker per backend: stop sending requests to a backend that keeps failing, then probe it.

Theory of operation: health checks (wirelab.proto.balance) watch whether a backend accepts
connections; the breaker watches what its answers are worth. It is a table (`TRANSITIONS`) from
(circuit, signal) to the next circuit, as balance.py's health is:

- closed: requests flow; `failures` consecutive failures open it (a success resets the count);
- open: no request is admitted; once `open_s` has passed the next admission turns it half-open;
- half-open: at most `half_open_requests` trial requests are in flight at once; the first result
  recorded decides: a success closes the circuit, a failure opens it for another `open_s`.

The contract with the caller (the balancer): ask `available(now)` to filter candidates (it has no
side effect, so it may be asked of backends that are not chosen), then `allow(now)` for the one
chosen (it claims a trial slot when half-open), and end each admitted request with exactly one
`record(ok, now)`, or `release()` when it ended with no verdict (the client went away first). A
failure is the balancer's call: a connect error, a reset, a timeout, or a 5xx answer; anything else
is a success. Results that arrive while the circuit is open (requests admitted before it opened)
change nothing. The move to half-open happens inside `allow` and is not reported; the trial's
outcome is. Time is passed in as `now` (monotonic seconds).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "TRANSITIONS",
    "Breaker",
    "BreakerPolicy",
    "BreakerTransition",
    "Breakers",
    "Circuit",
    "Signal",
]


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 5
    open_s: float = 10.0
    half_open_requests: int = 1


class Circuit(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Signal(enum.Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    OPEN_OVER = "open-over"
    """`open_s` has passed since the circuit opened (noticed at the next admission)."""


# (circuit, signal) -> (next circuit, whether it needs `failures` consecutive failures first).
TRANSITIONS: dict[tuple[Circuit, Signal], tuple[Circuit, bool]] = {
    (Circuit.CLOSED, Signal.SUCCESS): (Circuit.CLOSED, False),
    (Circuit.CLOSED, Signal.FAILURE): (Circuit.OPEN, True),
    (Circuit.CLOSED, Signal.OPEN_OVER): (Circuit.CLOSED, False),
    (Circuit.OPEN, Signal.SUCCESS): (Circuit.OPEN, False),
    (Circuit.OPEN, Signal.FAILURE): (Circuit.OPEN, False),
    (Circuit.OPEN, Signal.OPEN_OVER): (Circuit.HALF_OPEN, False),
    (Circuit.HALF_OPEN, Signal.SUCCESS): (Circuit.CLOSED, False),
    (Circuit.HALF_OPEN, Signal.FAILURE): (Circuit.OPEN, False),
    (Circuit.HALF_OPEN, Signal.OPEN_OVER): (Circuit.HALF_OPEN, False),
}


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """A breaker changed circuit; the balancer logs and counts it."""

    key: str
    old: Circuit
    new: Circuit
    signal: Signal


class Breaker:
    """The circuit of one backend (`key`, its address)."""

    def __init__(self, key: str, policy: BreakerPolicy) -> None:
        self.key = key
        self.policy = policy
        self.circuit = Circuit.CLOSED
        self.failures = 0
        """Consecutive failures while closed."""
        self.trials = 0
        """Trial requests in flight while half-open."""
        self.opened_at = 0.0

    def available(self, now: float) -> bool:
        """Whether `allow(now)` would admit a request; changes nothing."""
        if self.circuit is Circuit.OPEN:
            return now >= self.opened_at + self.policy.open_s
        if self.circuit is Circuit.HALF_OPEN:
            return self.trials < self.policy.half_open_requests
        return True

    def allow(self, now: float) -> bool:
        """Admit a request, or refuse it; when half-open, an admitted request takes a trial slot."""
        if not self.available(now):
            return False
        if self.circuit is Circuit.OPEN:
            self._apply(Signal.OPEN_OVER, now)
        if self.circuit is Circuit.HALF_OPEN:
            self.trials += 1
        return True

    def record(self, ok: bool, now: float) -> BreakerTransition | None:
        """An admitted request's verdict (see the module docstring for what counts as a failure)."""
        self.release()
        return self._apply(Signal.SUCCESS if ok else Signal.FAILURE, now)

    def release(self) -> None:
        """An admitted request ended without a verdict: its trial slot, if it had one, is free again."""
        self.trials = max(self.trials - 1, 0)

    def _apply(self, signal: Signal, now: float) -> BreakerTransition | None:
        if self.circuit is Circuit.CLOSED:
            self.failures = self.failures + 1 if signal is Signal.FAILURE else 0
        target, needs_streak = TRANSITIONS[self.circuit, signal]
        if target is self.circuit or (needs_streak and self.failures < self.policy.failures):
            return None
        transition = BreakerTransition(self.key, self.circuit, target, signal)
        self.circuit, self.failures, self.trials = target, 0, 0
        if target is Circuit.OPEN:
            self.opened_at = now
        return transition


class Breakers:
    """A breaker per backend address, made on first use; `update` applies a reloaded policy."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.policy = policy
        self._breakers: dict[str, Breaker] = {}

    def __getitem__(self, key: str) -> Breaker:
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = self._breakers[key] = Breaker(key, self.policy)
        return breaker

    def update(self, policy: BreakerPolicy, keys: Iterable[str]) -> None:
        """Keep the circuits of the backends in `keys` under the new policy; forget the others."""
        self.policy = policy
        self._breakers = {key: self[key] for key in keys}
        for breaker in self._breakers.values():
            breaker.policy = policy

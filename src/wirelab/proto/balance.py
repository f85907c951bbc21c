"""Balancing policies and backend health for the balancers: which backend gets the next connection.

Theory of operation: a `Pool` holds the backends, each with a health `State` and its count of open
connections. The adapter asks `pick(client_key)` for a backend, reports `opened`/`closed` around each
connection, `connect_failed` when a connect fails (passive checks) and `check_result` for each active
probe. Health is a table (`TRANSITIONS`) from (state, signal) to the next state, some entries guarded
by a streak of equal probe results (`rise` successes, `fall` failures), so that one lost probe does
not flap a backend. A passive ejection lasts `eject_s`; time is passed in as `now`, and
`handle_timer(now)` ends the ejections that are due (re-admitting the backend on trial). With active
checks a backend that comes back is re-admitted as soon as `rise` probes succeed.

Policies only choose among the backends that are up and that the caller's `usable` accepts:
- round-robin is nginx's smooth weighted round-robin (weights interleave rather than burst);
- least-connections takes the fewest open connections per unit of weight, ties going to the one
  picked least, so sequential short connections still spread by weight;
- source-hash is weighted rendezvous hashing of the client's address: a client keeps its backend,
  and when a backend leaves only its own clients move.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from wirelab.errors import ConfigError

__all__ = [
    "ALGORITHMS",
    "TRANSITIONS",
    "Backend",
    "HealthPolicy",
    "Pool",
    "Signal",
    "State",
    "Transition",
]

ALGORITHMS = ("round-robin", "least-connections", "source-hash")


@dataclass(frozen=True, slots=True)
class Backend:
    host: str
    port: int
    weight: int = 1
    address: str = field(init=False, compare=False, repr=False)
    """HOST:PORT, the backend's identity across reloads: a weight change keeps its state and counts.
    Made once: the balancers look it up several times per request."""

    def __post_init__(self) -> None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        object.__setattr__(self, "address", f"{host}:{self.port}")


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    rise: int = 2
    fall: int = 3
    eject_s: float = 10.0


class State(enum.Enum):
    UP = "up"
    DOWN = "down"
    EJECTED = "ejected"


class Signal(enum.Enum):
    CHECK_OK = "check-ok"
    CHECK_FAIL = "check-fail"
    CONNECT_FAIL = "connect-fail"
    EJECTION_OVER = "ejection-over"


# (state, signal) -> (next state, the streak it needs: "rise", "fall" or None for at once).
TRANSITIONS: dict[tuple[State, Signal], tuple[State, str | None]] = {
    (State.UP, Signal.CHECK_OK): (State.UP, None),
    (State.UP, Signal.CHECK_FAIL): (State.DOWN, "fall"),
    (State.UP, Signal.CONNECT_FAIL): (State.EJECTED, None),
    (State.UP, Signal.EJECTION_OVER): (State.UP, None),
    (State.DOWN, Signal.CHECK_OK): (State.UP, "rise"),
    (State.DOWN, Signal.CHECK_FAIL): (State.DOWN, None),
    (State.DOWN, Signal.CONNECT_FAIL): (State.DOWN, None),
    (State.DOWN, Signal.EJECTION_OVER): (State.DOWN, None),
    (State.EJECTED, Signal.CHECK_OK): (State.UP, "rise"),
    (State.EJECTED, Signal.CHECK_FAIL): (State.DOWN, "fall"),
    (State.EJECTED, Signal.CONNECT_FAIL): (State.EJECTED, None),
    (State.EJECTED, Signal.EJECTION_OVER): (State.UP, None),
}


@dataclass(frozen=True, slots=True)
class Transition:
    """A backend changed state; the adapter logs it (one line per notable event)."""

    backend: Backend
    old: State
    new: State
    signal: Signal


class _Member:
    """A backend's mutable bookkeeping inside the pool."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.state = State.UP
        self.streak: tuple[Signal | None, int] = (None, 0)
        self.ejected_until = 0.0
        self.active = 0
        self.picks = 0
        self.current = 0  # smooth round-robin's running weight


class Pool:
    """The backends of one balancer, their health and load; `pick` applies the algorithm."""

    def __init__(
        self, backends: Iterable[Backend], *, algorithm: str = "round-robin", health: HealthPolicy
    ) -> None:
        self._members: dict[str, _Member] = {}
        self.update(backends, algorithm=algorithm, health=health)

    def update(self, backends: Iterable[Backend], *, algorithm: str, health: HealthPolicy) -> None:
        """Apply a new configuration; backends that stay keep their health and open-connection counts."""
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"algorithm: {algorithm!r} is not one of {', '.join(ALGORITHMS)}")
        members: dict[str, _Member] = {}
        for backend in backends:
            member = self._members.get(backend.address) or _Member(backend)
            member.backend = backend
            members[backend.address] = member
        self._members = members
        self.algorithm = algorithm
        self.health = health

    @property
    def backends(self) -> list[Backend]:
        return [member.backend for member in self._members.values()]

    def state(self, backend: Backend) -> State:
        return self._members[backend.address].state

    def active(self, backend: Backend) -> int:
        return self._members[backend.address].active

    def pick(self, client_key: bytes, usable: Callable[[Backend], bool] | None = None) -> Backend | None:
        """The backend for a new connection from `client_key` (its address), or None if none is up.

        `usable` rules out more backends for this pick only (an open circuit breaker, one that just
        failed this request); it is asked only about backends that are up, and must not assume that
        the one it accepts is chosen.
        """
        candidates = [
            m
            for m in self._members.values()
            if m.state is State.UP and (usable is None or usable(m.backend))
        ]
        if not candidates:
            return None
        if self.algorithm == "round-robin":
            chosen = _smooth_round_robin(candidates)
        elif self.algorithm == "least-connections":
            chosen = min(
                candidates, key=lambda m: (m.active / m.backend.weight, m.picks / m.backend.weight)
            )
        else:
            chosen = max(candidates, key=lambda m: _rendezvous_score(client_key, m.backend))
        chosen.picks += 1
        return chosen.backend

    def opened(self, backend: Backend) -> None:
        self._members[backend.address].active += 1

    def closed(self, backend: Backend) -> None:
        """A connection ended; a backend removed by a reload since then is simply forgotten."""
        member = self._members.get(backend.address)
        if member is not None:
            member.active -= 1

    def connect_failed(self, backend: Backend, now: float) -> Transition | None:
        """Passive check: a failed connect ejects the backend for `eject_s` from `now`."""
        member = self._members.get(backend.address)
        if member is None:
            return None
        member.ejected_until = now + self.health.eject_s
        return self._apply(member, Signal.CONNECT_FAIL)

    def check_result(self, backend: Backend, ok: bool) -> Transition | None:
        """Active check: one probe's outcome."""
        member = self._members.get(backend.address)
        if member is None:
            return None
        return self._apply(member, Signal.CHECK_OK if ok else Signal.CHECK_FAIL)

    def handle_timer(self, now: float) -> list[Transition]:
        """End the ejections due by `now`."""
        due = [m for m in self._members.values() if m.state is State.EJECTED and m.ejected_until <= now]
        return [t for m in due if (t := self._apply(m, Signal.EJECTION_OVER)) is not None]

    def _apply(self, member: _Member, signal: Signal) -> Transition | None:
        last, count = member.streak
        if signal in (Signal.CHECK_OK, Signal.CHECK_FAIL):
            count = count + 1 if last is signal else 1
            member.streak = (signal, count)
        target, needs = TRANSITIONS[member.state, signal]
        streak_needed = {"rise": self.health.rise, "fall": self.health.fall}
        if needs is not None and count < streak_needed[needs]:
            return None
        if target is member.state:
            return None
        transition = Transition(member.backend, member.state, target, signal)
        member.state = target
        return transition


def _smooth_round_robin(candidates: Sequence[_Member]) -> _Member:
    total = 0
    for member in candidates:
        member.current += member.backend.weight
        total += member.backend.weight
    chosen = max(candidates, key=lambda m: m.current)
    chosen.current -= total
    return chosen


def _rendezvous_score(client_key: bytes, backend: Backend) -> float:
    """Weighted highest-random-weight: -w / ln(u), u uniform in (0, 1) from a stable hash."""
    digest = hashlib.blake2b(client_key + b"|" + backend.address.encode(), digest_size=8).digest()
    unit = (int.from_bytes(digest, "big") + 1) / (2**64 + 1)
    return -backend.weight / math.log(unit)

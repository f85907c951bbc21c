"""The schedule of one direction of an impaired link: when each chunk or datagram may leave, or
whether it is lost.

Theory of operation: a link direction is a line of a given rate followed by a delay, as netem models
it. A chunk of `size` bytes that arrives at `now` waits until the line is free (`free_at`: the last
chunk's last bit has been sent), takes `size * 8 / rate` seconds to go onto the line, then travels
`delay` plus a jitter drawn uniformly from `[-jitter, +jitter]` (never below zero). `Link.admit`
returns that release time; the adapter holds the bytes until then. Without a rate the line is never
busy, and the chunk only travels.

A byte stream (TCP between the proxy's two legs) must come out in order and whole: jitter may not
let a chunk overtake the one before it (its release is clamped to the previous one, as a FIFO queue
would hold it back), and nothing may be dropped, so a stream link refuses a loss (packet loss on TCP
belongs in the kernel, see wirelab.net.netns). Datagrams may be lost, each independently with
probability `loss`, and jitter may reorder them, as it does on a real network. Every random draw
comes from a `random.Random` seeded by the impairment, so a seed gives the same schedule on every run
and tests compare exact times.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from wirelab.errors import ConfigError

__all__ = ["Impairment", "Link", "LinkStats"]


@dataclass(frozen=True, slots=True)
class Impairment:
    """What one direction of a link does to what crosses it. Times in seconds, rate in bits per second
    (None: unlimited), loss a probability per datagram."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    rate_bps: int | None = None
    loss: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("delay_s", "jitter_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} is a finite number of seconds, at least 0, not {value}")
        if self.rate_bps is not None and self.rate_bps <= 0:
            raise ConfigError(
                f"rate_bps is a positive number of bits per second, or None, not {self.rate_bps}"
            )
        if not 0 <= self.loss <= 1:
            raise ConfigError(f"loss is a probability between 0 and 1, not {self.loss}")

    def __str__(self) -> str:
        parts = [f"delay {self.delay_s * 1000:g}ms"]
        if self.jitter_s:
            parts.append(f"jitter {self.jitter_s * 1000:g}ms")
        if self.rate_bps is not None:
            parts.append(f"rate {self.rate_bps / 1e6:g}mbit")
        if self.loss:
            parts.append(f"loss {self.loss * 100:g}%")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class LinkStats:
    admitted: int = 0
    dropped: int = 0
    bytes: int = 0
    """Bytes admitted (dropped datagrams not counted)."""


class Link:
    """One direction of a link: `admit` each chunk (`ordered`: a byte stream) or datagram as it arrives."""

    def __init__(self, impairment: Impairment, *, ordered: bool) -> None:
        if ordered and impairment.loss:
            raise ConfigError(
                "a byte stream cannot lose bytes (TCP would not be TCP): drop packets in a network "
                "namespace instead (wirelab.net.netns)"
            )
        self.impairment = impairment
        self.ordered = ordered
        self._random = random.Random(impairment.seed)
        self.free_at = -math.inf
        """When the line has sent the last admitted chunk's last bit."""
        self._last_release = -math.inf
        self._admitted = self._dropped = self._bytes = 0

    def admit(self, size: int, now: float) -> float | None:
        """When `size` bytes that arrived at `now` may leave the far end; None when they are lost."""
        imp = self.impairment
        if imp.loss and self._random.random() < imp.loss:
            self._dropped += 1
            return None
        start = max(now, self.free_at)
        self.free_at = start + size * 8 / imp.rate_bps if imp.rate_bps else start
        jitter = self._random.uniform(-imp.jitter_s, imp.jitter_s) if imp.jitter_s else 0.0
        release = self.free_at + max(imp.delay_s + jitter, 0.0)
        if self.ordered:
            release = max(release, self._last_release)
        self._last_release = release
        self._admitted += 1
        self._bytes += size
        return release

    def statistics(self) -> LinkStats:
        return LinkStats(self._admitted, self._dropped, self._bytes)

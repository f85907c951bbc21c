"""The layer 7 balancer's figures, per backend, in the Prometheus text format (version 0.0.4).

Counters and a latency histogram kept in plain dicts: the balancer has one thread, and a scrape
renders them as text; nothing is sent anywhere.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Mapping
from itertools import accumulate

from wirelab.proto.balance import Pool, State
from wirelab.proto.breaker import Breakers, Circuit

__all__ = ["BUCKETS", "Metrics"]

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the response-time histogram's buckets."""


class Metrics:
    """Per-backend counters and a latency histogram, rendered in the Prometheus text format."""

    def __init__(self) -> None:
        self.responses: defaultdict[tuple[str, int], int] = defaultdict(int)
        self.errors: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.buckets: defaultdict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        """Per backend, how many responses fell in each bucket (not cumulative; the last: over all)."""
        self.latency: defaultdict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])  # sum, count
        self.retries = 0

    def observe(self, backend: str, status: int, seconds: float) -> None:
        """A response head arrived from `backend` after `seconds`."""
        self.responses[backend, status] += 1
        self.buckets[backend][bisect_left(BUCKETS, seconds)] += 1
        latency = self.latency[backend]
        latency[0] += seconds
        latency[1] += 1

    def render(self, pools: Mapping[str, Pool], breakers: Breakers, upstream_opened: int) -> bytes:
        lines = [
            "# HELP wirelab_l7_responses_total Responses relayed, per backend and status code.",
            "# TYPE wirelab_l7_responses_total counter",
            *(
                f'wirelab_l7_responses_total{{backend="{b}",code="{code}"}} {n}'
                for (b, code), n in sorted(self.responses.items())
            ),
            "# HELP wirelab_l7_errors_total Backend failures (connect, reset before answering, broken).",
            "# TYPE wirelab_l7_errors_total counter",
            *(
                f'wirelab_l7_errors_total{{backend="{b}",kind="{kind}"}} {n}'
                for (b, kind), n in sorted(self.errors.items())
            ),
            "# TYPE wirelab_l7_retries_total counter",
            f"wirelab_l7_retries_total {self.retries}",
            "# TYPE wirelab_l7_upstream_connections_opened_total counter",
            f"wirelab_l7_upstream_connections_opened_total {upstream_opened}",
            "# HELP wirelab_l7_response_seconds Time from sending a request to its response head.",
            "# TYPE wirelab_l7_response_seconds histogram",
        ]
        for backend, counts in sorted(self.buckets.items()):
            total, count = self.latency[backend]
            cumulative = list(accumulate(counts))
            lines += [
                f'wirelab_l7_response_seconds_bucket{{backend="{backend}",le="{bound}"}} {n}'
                for bound, n in zip(BUCKETS, cumulative, strict=False)
            ]
            lines += [
                f'wirelab_l7_response_seconds_bucket{{backend="{backend}",le="+Inf"}} {int(count)}',
                f'wirelab_l7_response_seconds_sum{{backend="{backend}"}} {total:.6f}',
                f'wirelab_l7_response_seconds_count{{backend="{backend}"}} {int(count)}',
            ]
        members = [(name, pool, b) for name, pool in sorted(pools.items()) for b in pool.backends]
        lines += [
            "# HELP wirelab_l7_backend_up 1 if the backend takes requests (health checks).",
            "# TYPE wirelab_l7_backend_up gauge",
            *(
                f'wirelab_l7_backend_up{{pool="{name}",backend="{b.address}"}} '
                f"{int(p.state(b) is State.UP)}"
                for name, p, b in members
            ),
            "# TYPE wirelab_l7_backend_outstanding gauge",
            *(
                f'wirelab_l7_backend_outstanding{{pool="{name}",backend="{b.address}"}} {p.active(b)}'
                for name, p, b in members
            ),
            "# HELP wirelab_l7_breaker_open 1 while the backend's circuit breaker is open or half-open.",
            "# TYPE wirelab_l7_breaker_open gauge",
            *(
                f'wirelab_l7_breaker_open{{backend="{address}"}} '
                f"{int(breakers[address].circuit is not Circuit.CLOSED)}"
                for address in sorted({b.address for _, _, b in members})
            ),
        ]
        return ("\n".join(lines) + "\n").encode()

"""How notify counts latency: per published event, until the client held it or something newer."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from wirelab.bench.notify import Outcome, latencies_ms
from wirelab.clients import Update


def _update(version: int, at: float, event: str = "progress") -> Update:
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return Update(version, event, {"version": version, "updated_at": stamp})


def test_latency_counts_each_published_event_until_the_client_saw_it_or_newer() -> None:
    """A poll that skipped versions 3 and 4 told its client about both late, when it saw 5."""
    history = [_update(v, 100.0 + v) for v in range(1, 6)]
    history[-1] = _update(5, 105.0, "done")
    outcome = Outcome("jobs/x", started=102.5, stamped=[(history[1], 102.6), (history[4], 105.25)])
    # version 2 was published before the client started following: not a notification
    assert latencies_ms(outcome, history, final_only=False) == pytest.approx([2250.0, 1250.0, 250.0])
    assert latencies_ms(outcome, history, final_only=True) == pytest.approx([250.0])

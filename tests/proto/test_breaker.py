"""The circuit breaker's state machine, fed results and `now` directly."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from wirelab.proto.breaker import (
    TRANSITIONS,
    Breaker,
    BreakerPolicy,
    Breakers,
    BreakerTransition,
    Circuit,
    Signal,
)

POLICY = BreakerPolicy(failures=3, open_s=10.0, half_open_requests=1)


def opened(policy: BreakerPolicy = POLICY, now: float = 100.0) -> Breaker:
    breaker = Breaker("10.0.0.1:80", policy)
    for _ in range(policy.failures):
        assert breaker.allow(now)
        breaker.record(False, now)
    assert breaker.circuit is Circuit.OPEN
    return breaker


def test_every_circuit_and_signal_has_a_transition() -> None:
    assert set(TRANSITIONS) == set(itertools.product(Circuit, Signal))


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    breaker = Breaker("b", POLICY)
    assert breaker.record(False, 1.0) is None
    assert breaker.record(False, 1.0) is None
    assert breaker.record(True, 1.0) is None  # the streak starts over
    assert breaker.record(False, 2.0) is None
    assert breaker.record(False, 2.0) is None
    assert breaker.record(False, 3.0) == BreakerTransition(
        "b", Circuit.CLOSED, Circuit.OPEN, Signal.FAILURE
    )
    assert not breaker.available(3.0)
    assert not breaker.allow(12.9)


def test_after_open_s_one_trial_is_admitted_and_its_success_closes_it() -> None:
    breaker = opened(now=100.0)
    assert not breaker.allow(109.99)
    assert breaker.available(110.0)
    assert breaker.allow(110.0)
    assert breaker.circuit is Circuit.HALF_OPEN
    assert not breaker.available(110.0)  # the one trial slot is taken
    assert not breaker.allow(111.0)
    transition = breaker.record(True, 111.0)
    assert transition == BreakerTransition(breaker.key, Circuit.HALF_OPEN, Circuit.CLOSED, Signal.SUCCESS)
    assert all(breaker.allow(111.0) for _ in range(5))


def test_a_failed_trial_opens_it_for_another_open_s() -> None:
    breaker = opened(now=100.0)
    assert breaker.allow(110.0)
    transition = breaker.record(False, 112.0)
    assert transition is not None and (transition.old, transition.new) == (Circuit.HALF_OPEN, Circuit.OPEN)
    assert not breaker.allow(121.9)  # open_s counts from the failed trial
    assert breaker.allow(122.0)


def test_half_open_admits_up_to_half_open_requests_at_a_time() -> None:
    breaker = opened(BreakerPolicy(failures=1, open_s=1.0, half_open_requests=2), now=0.0)
    assert [breaker.allow(1.0) for _ in range(3)] == [True, True, False]
    breaker.release()  # a trial ended without a verdict: its slot is free again
    assert breaker.allow(1.0)
    assert not breaker.allow(1.0)


def test_results_while_open_change_nothing() -> None:
    """Requests admitted before it opened may still answer; they neither close nor extend it."""
    breaker = opened(now=100.0)
    assert breaker.record(True, 105.0) is None
    assert breaker.record(False, 105.0) is None
    assert breaker.circuit is Circuit.OPEN
    assert breaker.allow(110.0)


def test_available_claims_nothing() -> None:
    breaker = opened(now=0.0)
    assert all(breaker.available(10.0) for _ in range(3))
    assert breaker.circuit is Circuit.OPEN
    assert breaker.allow(10.0)


def test_breakers_are_per_address_and_survive_a_reload_that_keeps_them() -> None:
    breakers = Breakers(POLICY)
    for _ in range(3):
        breakers["a:1"].record(False, 0.0)
    assert breakers["a:1"].circuit is Circuit.OPEN
    breakers["b:1"].record(False, 0.0)
    assert (breakers["b:1"].circuit, breakers["b:1"].failures) == (Circuit.CLOSED, 1)
    longer = BreakerPolicy(failures=3, open_s=60.0)
    breakers.update(longer, ["a:1", "c:1"])
    assert breakers["a:1"].circuit is Circuit.OPEN
    assert not breakers["a:1"].allow(30.0)  # the new open_s applies to the open circuit
    assert breakers["c:1"].policy is longer
    assert breakers["b:1"].failures == 0  # the reload dropped it: made anew


@given(st.lists(st.sampled_from(["allow", "ok", "fail", "release", "tick"]), max_size=60))
def test_trials_in_flight_never_exceed_the_limit(steps: list[str]) -> None:
    policy = BreakerPolicy(failures=2, open_s=1.0, half_open_requests=2)
    breaker = Breaker("b", policy)
    now = 0.0
    for step in steps:
        if step == "allow":
            breaker.allow(now)
        elif step == "release":
            breaker.release()
        elif step == "tick":
            now += 0.6
        else:
            breaker.record(step == "ok", now)
        assert 0 <= breaker.trials <= policy.half_open_requests
        assert breaker.circuit is Circuit.HALF_OPEN or breaker.trials == 0
        assert breaker.failures < policy.failures

"""The balancing policies and the health state machine, fed signals and `now` directly."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from wirelab.errors import ConfigError
from wirelab.proto.balance import ALGORITHMS, TRANSITIONS, Backend, HealthPolicy, Pool, Signal, State

A, B, C = Backend("10.0.0.1", 80), Backend("10.0.0.2", 80), Backend("10.0.0.3", 80)
HEALTH = HealthPolicy(rise=2, fall=3, eject_s=10.0)


def pool(*backends: Backend, algorithm: str = "round-robin") -> Pool:
    return Pool(backends, algorithm=algorithm, health=HEALTH)


def picks(p: Pool, count: int, key: bytes = b"client") -> list[str]:
    chosen = [p.pick(key) for _ in range(count)]
    return [backend.address for backend in chosen if backend is not None]


def test_round_robin_takes_turns() -> None:
    assert picks(pool(A, B, C), 6) == [A.address, B.address, C.address] * 2


def test_round_robin_weights_interleave() -> None:
    """Smooth weighted round-robin: 3:1 gives three A per B, never a burst of all three A's then B."""
    heavy = Backend("10.0.0.1", 80, weight=3)
    sequence = picks(pool(heavy, B), 40)
    assert Counter(sequence) == {heavy.address: 30, B.address: 10}
    assert all(B.address in sequence[i : i + 4] for i in range(0, 40, 4))


def test_least_connections_prefers_the_least_loaded() -> None:
    p = pool(A, B, algorithm="least-connections")
    p.opened(A)
    p.opened(A)
    p.opened(B)
    assert p.pick(b"x") == B
    p.closed(A)
    p.closed(A)
    assert p.pick(b"x") == A


def test_least_connections_counts_per_unit_of_weight() -> None:
    heavy = Backend("10.0.0.1", 80, weight=2)
    p = pool(heavy, B, algorithm="least-connections")
    for backend in [heavy, heavy, heavy, B]:
        p.opened(backend)
    assert p.pick(b"x") == B  # 3/2 open per weight on heavy, 1/1 on B
    p.opened(B)
    assert p.pick(b"x") == heavy  # 3/2 against 2/1


def test_least_connections_spreads_sequential_connections_by_weight() -> None:
    heavy = Backend("10.0.0.1", 80, weight=2)
    assert Counter(picks(pool(heavy, B, algorithm="least-connections"), 30)) == {
        heavy.address: 20,
        B.address: 10,
    }


def test_source_hash_keeps_a_client_on_its_backend() -> None:
    p = pool(A, B, C, algorithm="source-hash")
    for key in (b"192.0.2.1", b"192.0.2.2", b"2001:db8::7"):
        assert len(set(picks(p, 5, key))) == 1


def test_source_hash_follows_weights_and_moves_only_the_lost_backends_clients() -> None:
    heavy = Backend("10.0.0.1", 80, weight=3)
    p = pool(heavy, B, C, algorithm="source-hash")
    keys = [f"198.51.100.{i}:{j}".encode() for i, j in itertools.product(range(50), range(40))]
    before = {key: p.pick(key) for key in keys}
    counts = Counter(before.values())
    assert 0.55 < counts[heavy] / len(keys) < 0.65  # 3 of 5
    p.connect_failed(C, now=0.0)
    after = {key: p.pick(key) for key in keys}
    assert all(after[key] == before[key] for key in keys if before[key] != C)
    assert C not in after.values()


def test_every_state_and_signal_has_a_transition() -> None:
    assert set(TRANSITIONS) == set(itertools.product(State, Signal))


def test_passive_ejection_lasts_eject_s_then_the_backend_is_back_on_trial() -> None:
    p = pool(A, B)
    transition = p.connect_failed(A, now=100.0)
    assert transition is not None and (transition.old, transition.new) == (State.UP, State.EJECTED)
    assert picks(p, 3) == [B.address] * 3
    assert p.handle_timer(109.9) == []
    [back] = p.handle_timer(110.0)
    assert (back.backend, back.new, back.signal) == (A, State.UP, Signal.EJECTION_OVER)
    assert A.address in picks(p, 2)


def test_active_checks_take_a_backend_out_after_fall_and_back_after_rise() -> None:
    p = pool(A, B)
    assert p.check_result(A, False) is None
    assert p.check_result(A, False) is None
    assert p.check_result(A, False) is not None
    assert p.state(A) is State.DOWN
    assert p.check_result(A, True) is None
    assert p.check_result(A, False) is None  # the streak starts over
    assert p.check_result(A, True) is None
    assert p.check_result(A, True) is not None
    assert p.state(A) is State.UP


def test_active_checks_readmit_an_ejected_backend_before_its_ejection_ends() -> None:
    p = pool(A)
    p.connect_failed(A, now=0.0)
    assert p.pick(b"x") is None
    p.check_result(A, True)
    p.check_result(A, True)
    assert p.state(A) is State.UP
    assert p.pick(b"x") == A


def test_ejection_ending_does_not_revive_a_backend_the_checks_took_down() -> None:
    p = pool(A)
    p.connect_failed(A, now=0.0)
    for _ in range(3):
        p.check_result(A, False)
    assert p.handle_timer(1000.0) == []
    assert p.state(A) is State.DOWN


def test_update_keeps_the_state_and_counts_of_backends_that_stay() -> None:
    p = pool(A, B)
    p.opened(A)
    p.connect_failed(B, now=0.0)
    reweighted = Backend(A.host, A.port, weight=5)
    p.update([reweighted, C], algorithm="least-connections", health=HEALTH)
    assert p.active(reweighted) == 1
    assert p.backends == [reweighted, C]
    p.closed(B)  # a connection to a removed backend ends: ignored
    assert p.connect_failed(B, now=1.0) is None
    assert p.check_result(B, True) is None


def test_an_unknown_algorithm_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="algorithm: 'random'"):
        pool(A, algorithm="random")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pick_skips_the_backends_the_caller_rules_out(algorithm: str) -> None:
    p = pool(A, B, C, algorithm=algorithm)
    for key in (b"192.0.2.1", b"192.0.2.2", b"192.0.2.3", b"192.0.2.4"):
        assert p.pick(key, usable=lambda b: b != A) in (B, C)
    assert p.pick(b"x", usable=lambda b: b == C) == C
    assert p.pick(b"x", usable=lambda b: False) is None


def test_usable_is_asked_only_about_backends_that_are_up() -> None:
    p = pool(A, B)
    p.connect_failed(A, now=0.0)
    asked: list[Backend] = []
    assert p.pick(b"x", usable=lambda b: asked.append(b) is None) == B
    assert asked == [B]


def test_ruling_out_a_backend_moves_only_its_source_hash_clients() -> None:
    p = pool(A, B, C, algorithm="source-hash")
    keys = [f"203.0.113.{i}".encode() for i in range(200)]
    before = {key: p.pick(key) for key in keys}
    after = {key: p.pick(key, usable=lambda b: b != B) for key in keys}
    assert all(after[key] == before[key] for key in keys if before[key] != B)
    assert B in before.values() and B not in after.values()


def test_round_robin_keeps_taking_turns_among_the_usable() -> None:
    p = pool(A, B, C)
    assert [p.pick(b"x", usable=lambda b: b != B) for _ in range(4)] == [A, C, A, C]

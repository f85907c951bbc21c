"""The link schedule, fed sizes and `now` directly: rate, delay, jitter, loss and order, exactly."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirelab.errors import ConfigError
from wirelab.proto.impair import Impairment, Link, LinkStats

MBIT = 1_000_000

arrivals = st.lists(
    st.tuples(st.integers(0, 64 * 1024), st.floats(0, 0.05, allow_nan=False)), min_size=1, max_size=200
)
"""(size, gap since the previous arrival) pairs."""
impairments = st.builds(
    Impairment,
    delay_s=st.floats(0, 0.2),
    jitter_s=st.floats(0, 0.1),
    rate_bps=st.none() | st.integers(8_000, 10_000 * MBIT),
    seed=st.integers(0, 2**32),
)


def admit_all(link: Link, pairs: list[tuple[int, float]]) -> list[tuple[float, float | None]]:
    now, times = 0.0, []
    for size, gap in pairs:
        now += gap
        times.append((now, link.admit(size, now)))
    return times


def test_delay_alone_shifts_every_chunk_by_the_delay() -> None:
    link = Link(Impairment(delay_s=0.025), ordered=True)
    assert [link.admit(1000, t) for t in (1.0, 1.5, 1.5)] == [1.025, 1.525, 1.525]


def test_the_rate_serializes_back_to_back_chunks_then_the_delay_applies() -> None:
    """10 Mbit/s: 1250 bytes take 1 ms on the line; the second waits for the first."""
    link = Link(Impairment(delay_s=0.010, rate_bps=10 * MBIT), ordered=True)
    assert link.admit(1250, 0.0) == pytest.approx(0.011)
    assert link.admit(1250, 0.0) == pytest.approx(0.012)
    assert link.free_at == pytest.approx(0.002)
    assert link.admit(1250, 1.0) == pytest.approx(1.011)  # the line was idle again


@given(impairments, arrivals)
def test_a_stream_is_released_in_order_never_before_its_delay(imp: Impairment, pairs: list) -> None:
    link = Link(imp, ordered=True)
    times = admit_all(link, pairs)
    releases = [release for _, release in times]
    assert None not in releases
    assert releases == sorted(releases)  # type: ignore[type-var]
    for arrived, release in times:
        assert release is not None
        assert release >= arrived + max(imp.delay_s - imp.jitter_s, 0) - 1e-9


@given(impairments, arrivals)
def test_the_same_seed_gives_the_same_schedule(imp: Impairment, pairs: list) -> None:
    assert admit_all(Link(imp, ordered=False), pairs) == admit_all(Link(imp, ordered=False), pairs)


@given(st.integers(8_000, 10_000 * MBIT), st.lists(st.integers(1, 64 * 1024), min_size=1, max_size=500))
def test_a_saturated_line_runs_exactly_at_the_rate(rate: int, sizes: list[int]) -> None:
    """Everything offered at once leaves the line after total bits / rate, whatever the chunking."""
    link = Link(Impairment(rate_bps=rate), ordered=True)
    last = [link.admit(size, 0.0) for size in sizes][-1]
    assert last == pytest.approx(sum(sizes) * 8 / rate)
    assert link.statistics() == LinkStats(admitted=len(sizes), dropped=0, bytes=sum(sizes))


def test_jitter_stays_within_its_bounds_and_spreads_around_the_delay() -> None:
    link = Link(Impairment(delay_s=0.050, jitter_s=0.010, seed=3), ordered=False)
    delays = [link.admit(100, float(t)) - t for t in range(5000)]  # type: ignore[operator]
    assert 0.040 <= min(delays) < 0.041 and 0.059 < max(delays) <= 0.060
    assert sum(delays) / len(delays) == pytest.approx(0.050, abs=0.0005)


def test_jitter_reorders_datagrams_but_never_a_stream() -> None:
    imp = Impairment(delay_s=0.020, jitter_s=0.020, seed=1)
    datagrams, stream = Link(imp, ordered=False), Link(imp, ordered=True)
    unordered = [datagrams.admit(10, 0.001 * i) or 0.0 for i in range(200)]
    ordered = [stream.admit(10, 0.001 * i) or 0.0 for i in range(200)]
    assert unordered != sorted(unordered)
    assert ordered == sorted(ordered)
    assert ordered[0] == unordered[0]  # the same draws: the stream only waits for its predecessor


def test_jitter_larger_than_the_delay_never_makes_a_negative_delay() -> None:
    link = Link(Impairment(delay_s=0.001, jitter_s=0.010, seed=2), ordered=False)
    assert all(link.admit(1, 5.0) >= 5.0 for _ in range(1000))  # type: ignore[operator]


@pytest.mark.parametrize("loss", [0.01, 0.03, 0.25])
def test_the_share_of_datagrams_lost_converges_on_the_loss(loss: float) -> None:
    link = Link(Impairment(loss=loss, seed=9), ordered=False)
    n = 100_000
    lost = sum(link.admit(1200, 0.0) is None for _ in range(n))
    assert lost == link.statistics().dropped
    assert abs(lost / n - loss) < 4 * math.sqrt(loss * (1 - loss) / n)


def test_a_lost_datagram_takes_no_time_on_the_line() -> None:
    link = Link(Impairment(rate_bps=8_000, loss=1.0), ordered=False)
    assert link.admit(1000, 0.0) is None
    assert link.free_at == -math.inf
    assert link.statistics() == LinkStats(admitted=0, dropped=1, bytes=0)


def test_a_stream_refuses_loss_and_says_where_loss_belongs() -> None:
    with pytest.raises(ConfigError, match="namespace"):
        Link(Impairment(loss=0.01), ordered=True)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delay_s": -0.001}, "delay_s"),
        ({"jitter_s": math.nan}, "jitter_s"),
        ({"delay_s": math.inf}, "delay_s"),
        ({"rate_bps": 0}, "rate_bps"),
        ({"loss": 1.5}, "between 0 and 1"),
        ({"loss": -0.1}, "between 0 and 1"),
    ],
)
def test_nonsense_is_refused_by_name(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Impairment(**kwargs)  # type: ignore[arg-type]


def test_it_reads_as_people_write_it() -> None:
    assert (
        str(Impairment(0.05, 0.005, 10 * MBIT, 0.005)) == "delay 50ms, jitter 5ms, rate 10mbit, loss 0.5%"
    )
    assert str(Impairment()) == "delay 0ms"

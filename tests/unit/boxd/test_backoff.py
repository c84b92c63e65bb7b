"""Backoff: full jitter under a growing, capped ceiling."""

from __future__ import annotations

import random

import pytest

from boxd.backoff import Backoff, Reconnect


def test_delays_stay_under_a_doubling_capped_ceiling() -> None:
    b = Backoff(1.0, 30.0, random.Random(1))
    for attempt in range(12):
        assert 0 <= b.next() <= min(30.0, 2.0**attempt)


def test_jitter_spreads_a_fleet() -> None:
    delays = []
    for seed in range(500):
        b = Backoff(1.0, 60.0, random.Random(seed))
        for _ in range(6):
            d = b.next()
        delays.append(d)
    # the sixth retry of 500 Boxes spreads over the whole 0..32 s window
    buckets = {int(d // 4) for d in delays}
    assert buckets == set(range(8))


def test_reset_starts_from_the_base() -> None:
    b = Backoff(1.0, 60.0, random.Random(2))
    for _ in range(10):
        b.next()
    b.reset()
    assert b.next() <= 1.0


def test_nonsense_is_refused() -> None:
    with pytest.raises(ValueError, match="base"):
        Backoff(0, 10)


# -- Reconnect: the uplink's policy (boxd.uplink, bench._fleet_box) ---------------------------------

def _first_tries(by_broker: bool, boxes: int = 10_000, spread_s: float = 30.0) -> list[float]:
    """The first reconnection delay of each Box of a fleet whose sessions ended together."""
    rng = random.Random(7)
    return [Reconnect(1.0, spread_s, 300.0, rng=rng).ended(3600.0, by_broker) for _ in range(boxes)]


def test_a_fleet_the_broker_dropped_comes_back_spread_over_the_window() -> None:
    tries = _first_tries(by_broker=True)
    per_second = [0] * 31
    for t in tries:
        per_second[int(t)] += 1
    # uniform over 0..30 s: each second holds about 1/30 of the fleet, none near the 5 % limit
    assert max(tries) <= 30.0
    assert max(per_second) <= 0.045 * len(tries), per_second
    assert min(per_second[:30]) >= 0.02 * len(tries), per_second


def test_a_box_that_lost_its_own_link_tries_again_within_a_second() -> None:
    tries = _first_tries(by_broker=False, boxes=1000)
    assert max(tries) <= 1.0


def test_failures_double_the_window_of_the_outage_up_to_the_cap() -> None:
    r = Reconnect(1.0, 30.0, 200.0, rng=random.Random(3))
    r.ended(3600.0, by_broker=True)
    ceilings = []
    for _ in range(4):
        ceilings.append(r.ceiling())
        assert 0 <= r.failed() <= ceilings[-1]
    assert ceilings == [60.0, 120.0, 200.0, 200.0]
    r.ended(3600.0, by_broker=False)  # a stable session, then the Box's own link: fast again
    assert r.ceiling() == 2.0 and r.window_s == 1.0


def test_a_short_session_counts_as_a_failure() -> None:
    r = Reconnect(1.0, 30.0, 300.0, rng=random.Random(4))
    assert r.ended(5.0, by_broker=False) <= 1.0
    assert r.ended(5.0, by_broker=False) <= 2.0
    assert r.ceiling() == 4.0  # a Box dropped at once again and again backs off
    r.ended(61.0, by_broker=False)
    assert r.ceiling() == 2.0


def test_the_cap_bounds_the_spread() -> None:
    r = Reconnect(1.0, 30.0, 2.0, rng=random.Random(5))
    assert r.ended(3600.0, by_broker=True) <= 2.0  # a test rig's reconnect_max_s = 2 stays quick


def test_no_spread_means_the_base_window() -> None:
    r = Reconnect(1.0, 0.0, 300.0, rng=random.Random(6))
    assert r.ended(3600.0, by_broker=True) <= 1.0


def test_nonsense_reconnection_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="base_s"):
        Reconnect(0.0, 30.0, 300.0)
    with pytest.raises(ValueError, match="spread_s"):
        Reconnect(1.0, -1.0, 300.0)

"""Backoff: full jitter under a growing, capped ceiling."""

from __future__ import annotations

import random

import pytest

from boxd.backoff import Backoff


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

"""The fault proxy's pure part: the token bucket behind its bandwidth cap."""

from __future__ import annotations

import pytest

from tests.support.faultproxy import TokenBucket


def test_token_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    bucket = TokenBucket(rate=1000, burst=100, now=0.0)
    assert bucket.take(100, now=0.0) == 0.0
    assert bucket.take(50, now=0.0) == pytest.approx(0.05)  # refused: wait for 50 bytes' worth
    assert bucket.take(50, now=0.05) == 0.0
    assert bucket.take(100, now=10.0) == 0.0  # never more than the burst saved up
    assert bucket.take(100, now=10.0) > 0


def test_token_bucket_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        TokenBucket(rate=0, burst=100, now=0.0)
    with pytest.raises(ValueError, match="at a time"):
        TokenBucket(rate=1000, burst=100, now=0.0).take(101, now=1.0)

"""Retries over about a day, giving up, disabling, the circuit breaker (`cloud.hooks.policy`, pure)."""

from __future__ import annotations

from itertools import pairwise

from cloud.hooks import policy


def test_retries_back_off_exponentially_with_jitter_and_give_up_after_about_a_day() -> None:
    lows = [policy.retry_delay(n, lambda: 0.0) for n in range(1, 12)]
    highs = [policy.retry_delay(n, lambda: 1.0) for n in range(1, 12)]
    assert lows[0] == 2.5 and highs[0] == 5.0  # half of it jitter
    assert all(b > a for a, b in pairwise(highs[:10]))
    assert highs[-1] == policy.CAP_S
    t, attempts = 0.0, 0
    while not policy.gives_up(0.0, t):
        attempts += 1
        t += policy.retry_delay(attempts, lambda: 0.5)
    assert 20 <= attempts <= 45 and 86400 <= t < 86400 + policy.CAP_S


def test_an_endpoint_failing_for_three_days_is_due_to_be_disabled() -> None:
    assert not policy.disable_due(None, 1e9)
    assert not policy.disable_due(1000.0, 1000.0 + 3 * 86400 - 1)
    assert policy.disable_due(1000.0, 1000.0 + 3 * 86400)


def test_the_breaker_opens_after_failures_in_a_row_rests_longer_each_time_and_closes_on_success() -> None:
    b = policy.Breaker()
    for _ in range(policy.TRIP_AFTER - 1):
        b.failure(100.0)
    assert b.allows(100.0) and b.state == "closed"
    b.failure(100.0)
    assert b.state == "open" and not b.allows(100.0) and b.allows(100.0 + policy.OPEN_S)
    b.failure(200.0)  # the half-open try failed: a longer rest
    assert not b.allows(200.0 + policy.OPEN_S) and b.allows(200.0 + 2 * policy.OPEN_S)
    b.success()
    assert b.state == "closed" and b.allows(0.0)


def test_the_breaker_is_kept_as_it_was_across_a_restart() -> None:
    b = policy.Breaker()
    for _ in range(policy.TRIP_AFTER + 1):
        b.failure(100.0)
    again = policy.Breaker.restored(b.saved())
    assert again.saved() == b.saved() and again.state == "open" and not again.allows(100.0 + policy.OPEN_S)
    again.failure(200.0)  # it goes on doubling its rest from where it was
    assert again.open_until == 200.0 + 4 * policy.OPEN_S

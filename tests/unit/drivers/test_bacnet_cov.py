"""COV renewal and fallback decisions, driven by a fake clock (pure)."""

from __future__ import annotations

from drivers.bacnet import CovTracker, Subscription, SubState, renew_margin
from drivers.bacnet._cov import REFUSED_RETRY_S


def tracker(lifetime: float = 300, request: float = 6.0, poll: float = 10.0) -> CovTracker:
    subs = [Subscription(1, (0, 1)), Subscription(2, (2,))]
    return CovTracker(subs, lifetime_s=lifetime, request_time_s=request, poll_interval_s=poll)


def test_margin_leaves_room_for_a_renewal_that_times_out() -> None:
    assert renew_margin(300, 6.0) == 12.0
    assert renew_margin(300, 1.0) == 10.0  # at least 10 s
    assert renew_margin(4, 0.5) == 2.0  # at most half the lifetime


def test_new_subscriptions_are_due_at_once_then_renewed_before_the_lifetime_ends() -> None:
    t = tracker()
    assert [s.process_id for s in t.due(0.0)] == [1, 2]
    assert t.covered(0.0) == set()
    for s in t.due(0.0):
        t.accepted(s, 0.0)
    assert t.covered(1.0) == {0, 1, 2}
    assert t.due(287.9) == [] and t.next_due() == 288.0
    assert [s.process_id for s in t.due(288.0)] == [1, 2]
    t.accepted(t.subscriptions[1], 288.5)
    assert t.next_due() == 288.0  # number 2 is still due
    assert t.covered(299.9) == {0, 1, 2}
    assert t.covered(300.0) == {0, 1}  # number 2 ran out: its point is polled


def test_an_unanswered_renewal_lapses_at_once_and_is_tried_again_later() -> None:
    t = tracker(lifetime=60, poll=10)
    for s in t.due(0.0):
        t.accepted(s, 0.0)
    sub = t.subscriptions[2]
    t.unanswered(sub, 48.0)
    assert sub.state is SubState.LAPSED
    assert t.covered(48.0) == {0, 1}  # polled from the next cycle on, within one poll interval
    assert sub not in t.due(77.9)
    assert sub in t.due(78.0)  # max(poll interval, lifetime / 2)
    t.device_back(50.0)  # the device answers polls again: try at once
    assert sub in t.due(50.0)


def test_refusals_poll_and_ask_much_later() -> None:
    t = tracker()
    t.refused(t.subscriptions[1], 5.0)
    assert t.subscriptions[1].state is SubState.REFUSED
    assert t.subscriptions[1] not in t.due(5.0 + REFUSED_RETRY_S - 1)
    assert t.subscriptions[1] in t.due(5.0 + REFUSED_RETRY_S)
    t.refuse_all(10.0)
    assert t.counts()[SubState.REFUSED] == 2 and t.covered(11.0) == set()
    t.device_back(12.0)  # does not retry refused ones
    assert t.due(12.0) == []


def test_a_restart_sends_every_subscription_again_but_not_refused_ones() -> None:
    t = tracker()
    for s in t.due(0.0):
        t.accepted(s, 0.0)
    t.refused(t.subscriptions[2], 1.0)
    t.restarted(100.0)
    assert t.subscriptions[1].state is SubState.LAPSED and t.covered(100.0) == set()
    assert [s.process_id for s in t.due(100.0)] == [1]
    t.accepted(t.subscriptions[1], 100.2)
    assert t.covered(100.3) == {0, 1}
    assert t.counts() == {SubState.NONE: 0, SubState.ACTIVE: 1, SubState.LAPSED: 0, SubState.REFUSED: 1}


def test_no_subscriptions_never_due() -> None:
    t = CovTracker([], lifetime_s=300, request_time_s=6, poll_interval_s=10)
    assert t.next_due() is None and t.due(1e9) == []

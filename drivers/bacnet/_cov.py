"""COV subscription bookkeeping: when to subscribe, renew, give up and poll (pure).

Does: keep the state of each SubscribeCOV of one device (none yet, active, lapsed,
refused) and answer, for a given time on the caller's clock, which subscriptions are
due to be sent and which points they cover (a covered point is not polled). Does
not: send anything or read a clock (the device task does, and passes ``now``); so
the tests drive it with a fake clock.

Rules:

* a subscription is renewed `margin` seconds before its lifetime ends, where the
  margin is long enough for the renewal to time out and still leave time, but at most
  half the lifetime: ``min(lifetime / 2, max(10 s, 2 x request time))``;
* a subscription covers its points while active and not past its lifetime;
* a renewal that is not answered (or a device that seems to have restarted) lapses
  the subscription at once: its points are polled from the next poll cycle on, so
  polling resumes within one poll interval; it is tried again after
  ``max(poll interval, lifetime / 2)``;
* a refusal (Reject, Error, Abort) marks the subscription refused, tried again after
  `REFUSED_RETRY_S` (the device may have run out of subscription slots); a device
  that does not know SubscribeCOV at all refuses every one of its subscriptions.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

REFUSED_RETRY_S: Final = 3600.0
MIN_MARGIN_S: Final = 10.0


class SubState(enum.Enum):
    """Where a subscription stands."""

    NONE = "none"  # not subscribed yet
    ACTIVE = "active"
    LAPSED = "lapsed"  # a renewal went unanswered, or the device restarted
    REFUSED = "refused"  # the device said no


@dataclass(slots=True)
class Subscription:
    """One SubscribeCOV of one object; `points` are indexes of the points it covers."""

    process_id: int
    points: tuple[int, ...]
    state: SubState = SubState.NONE
    since: float = 0.0  # when the device last accepted it
    retry_at: float = 0.0  # when to try again (NONE, LAPSED, REFUSED)


def renew_margin(lifetime_s: float, request_time_s: float) -> float:
    """Seconds before the end of a lifetime at which the renewal is sent."""
    return min(lifetime_s / 2, max(MIN_MARGIN_S, 2 * request_time_s))


class CovTracker:
    """The subscriptions of one device and the timing decisions about them."""

    def __init__(
        self, subscriptions: Iterable[Subscription], *, lifetime_s: float, request_time_s: float,
        poll_interval_s: float,
    ) -> None:
        self.subscriptions = {s.process_id: s for s in subscriptions}
        self.lifetime_s = lifetime_s
        self.poll_interval_s = poll_interval_s
        self.margin_s = renew_margin(lifetime_s, request_time_s)

    def renew_at(self, sub: Subscription) -> float:
        """When an active subscription is to be renewed."""
        return sub.since + self.lifetime_s - self.margin_s

    def due(self, now: float) -> list[Subscription]:
        """The subscriptions to send now: new, due for renewal, or due for another try."""
        out = []
        for sub in self.subscriptions.values():
            at = self.renew_at(sub) if sub.state is SubState.ACTIVE else sub.retry_at
            if at <= now:
                out.append(sub)
        return out

    def next_due(self) -> float | None:
        """The earliest time at which `due()` will return something; None if never."""
        times = [
            self.renew_at(s) if s.state is SubState.ACTIVE else s.retry_at
            for s in self.subscriptions.values()
        ]
        return min(times, default=None)

    def covered(self, now: float) -> set[int]:
        """Indexes of the points that COV keeps up to date at `now` (not to be polled)."""
        out: set[int] = set()
        for sub in self.subscriptions.values():
            if sub.state is SubState.ACTIVE and now < sub.since + self.lifetime_s:
                out.update(sub.points)
        return out

    def accepted(self, sub: Subscription, now: float) -> None:
        """The device acknowledged a subscription (new or renewed) at `now`."""
        sub.state, sub.since = SubState.ACTIVE, now

    def unanswered(self, sub: Subscription, now: float) -> None:
        """A subscription went unanswered: its points are polled until a later try works."""
        sub.state = SubState.LAPSED
        sub.retry_at = now + max(self.poll_interval_s, self.lifetime_s / 2)

    def refused(self, sub: Subscription, now: float) -> None:
        """The device refused a subscription: poll, ask again much later."""
        sub.state = SubState.REFUSED
        sub.retry_at = now + REFUSED_RETRY_S

    def refuse_all(self, now: float) -> None:
        """The device does not support SubscribeCOV at all."""
        for sub in self.subscriptions.values():
            self.refused(sub, now)

    def restarted(self, now: float) -> None:
        """The device announced itself (I-Am) as after a restart: it has forgotten its
        subscriptions, so they lapse and are sent again at once."""
        for sub in self.subscriptions.values():
            if sub.state is not SubState.REFUSED:
                sub.state, sub.retry_at = SubState.LAPSED, now

    def device_back(self, now: float) -> None:
        """The device answers again: lapsed subscriptions are tried at once."""
        for sub in self.subscriptions.values():
            if sub.state is SubState.LAPSED:
                sub.retry_at = min(sub.retry_at, now)

    def counts(self) -> dict[SubState, int]:
        """How many subscriptions are in each state."""
        out = dict.fromkeys(SubState, 0)
        for sub in self.subscriptions.values():
            out[sub.state] += 1
        return out

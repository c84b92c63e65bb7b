"""When to try again: exponential backoff with full jitter, and the uplink's reconnection policy (pure
code: the caller sleeps; a seeded `random.Random` in tests).

Full jitter (a uniform draw between 0 and the capped exponential) spreads the retries of many
Boxes instead of bunching them. `Reconnect` adds what a fleet needs after its broker went away:
the first reconnection of a Box whose session the broker's side closed is drawn from a wide
window (`spread_s`), so that the fleet a broker served comes back over that window rather than in
one second; a Box that lost only its own link comes back within a second. Used by boxd's uplink
(`boxd.uplink`) and by the fleet bench (`bench._fleet_box`), so the bench measures this policy.
"""

from __future__ import annotations

import random

_SHARED = random.Random()  # noqa: S311 - jitter, not cryptography. One for all: a Random holds 2.5 KB of state


class Backoff:
    """Delays for successive retries: uniform(0, min(cap, base * 2**attempt))."""

    def __init__(self, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None) -> None:
        if not 0 < base <= cap:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base, self.cap = base, cap
        self.attempt = 0
        self._rng = rng or _SHARED

    def next(self) -> float:
        """The delay before the next try; each call counts one more failure."""
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return self._rng.uniform(0, ceiling)

    def reset(self) -> None:
        """A try succeeded: start again from the base delay."""
        self.attempt = 0


class Reconnect:
    """The uplink's delays before each connection attempt.

    A session ends one of two ways (`ended(lasted_s, by_broker)`):

    - **by the broker's side** (its host closed the TCP connection: an end of stream or a reset; or
      the broker sent DISCONNECT): a broker restart, or one node of a cluster going away. Every Box
      it served lost its session at the same instant, so the first try is drawn from
      0..`spread_s` (30 s by default: a fleet of N Boxes comes back at about N/30 a second);
    - **any other way** (no answer within the keepalive, the network unreachable, a TCP timeout:
      most likely this Box's own link, a 4G cell lost): nobody else is reconnecting with it, so
      the first try is drawn from 0..`base_s` (1 s).

    Each failed try (`failed()`: refused, no answer, a TLS or MQTT refusal) doubles the window from
    where that outage started, up to `cap_s`. A session that lasted `stable_s` starts the count
    again; a shorter one counts as one more failure, so a broker that drops the Box at once is not
    hammered. `cap_s` bounds everything, the spread included.
    """

    def __init__(self, base_s: float = 1.0, spread_s: float = 30.0, cap_s: float = 300.0,
                 stable_s: float = 60.0, rng: random.Random | None = None) -> None:
        if not 0 < base_s <= cap_s or spread_s < 0:
            raise ValueError("reconnection needs 0 < base_s <= cap_s and spread_s >= 0")
        self.base_s, self.spread_s, self.cap_s, self.stable_s = base_s, spread_s, cap_s, stable_s
        self.failures = 0  # since the last stable session
        self.window_s = base_s  # the first window of the outage in progress
        self._rng = rng or _SHARED

    def ended(self, lasted_s: float, by_broker: bool) -> float:
        """A session that lasted `lasted_s` ended (`by_broker`: its side closed it); the delay before the next try."""
        if lasted_s >= self.stable_s:
            self.failures = 0
        self.window_s = max(self.base_s, self.spread_s) if by_broker else self.base_s
        return self._draw()

    def failed(self) -> float:
        """A try failed; the delay before the next one."""
        return self._draw()

    def ceiling(self) -> float:
        """The longest the next delay can be (what the log says the Box waits at most)."""
        return min(self.cap_s, self.window_s * 2.0 ** min(self.failures, 32))

    def _draw(self) -> float:
        ceiling = self.ceiling()
        self.failures += 1
        return self._rng.uniform(0, ceiling)

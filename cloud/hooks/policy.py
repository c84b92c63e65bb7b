"""When to try a webhook delivery again, when to stop, when to rest an endpoint. Pure: no I/O, no clock.

- **Retries**: after the n-th failed attempt of a delivery, the next one waits
  ``min(CAP_S, BASE_S * 2**n)``, of which a random half is jitter (so a thousand endpoints that
  failed together do not come back together); a delivery older than `GIVE_UP_S` (a day, some
  40 attempts) becomes a dead letter, replayable through the API.
- **Circuit breaker** per endpoint (`Breaker`): `TRIP_AFTER` failures in a row open it; while open
  no delivery is tried; after `OPEN_S` (doubling while it keeps failing, up to `OPEN_MAX_S`) one
  delivery is let through (half-open): a success closes it, a failure opens it again. Its state is
  kept in the connector's row (`saved`, `restored`) with each failure and success, so a restart of
  the platform does not close it (the retry schedule alone would let a new delivery, or the one
  after a dead letter, hit a failing endpoint every 5 s again).
- **Disable**: an endpoint that has taken nothing for `DISABLE_AFTER_S` (3 days) is disabled
  with an alert; its outbox keeps what it held (enable it again through the API to drain it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

BASE_S = 5.0
CAP_S = 3600.0
GIVE_UP_S = 86400.0
TRIP_AFTER = 5
OPEN_S = 30.0
OPEN_MAX_S = 600.0
DISABLE_AFTER_S = 3 * 86400.0


def retry_delay(attempts: int, rnd: Callable[[], float], base_s: float = BASE_S, cap_s: float = CAP_S) -> float:
    """The wait after the `attempts`-th failed attempt (1, 2, ...): exponential, half of it jitter."""
    full = min(cap_s, base_s * float(2 ** min(max(attempts - 1, 0), 30)))
    return full / 2 + rnd() * full / 2


def gives_up(created: float, now: float, give_up_s: float = GIVE_UP_S) -> bool:
    """Whether a delivery first grouped at `created` is a dead letter after a failure at `now`."""
    return now - created >= give_up_s


def disable_due(failing_since: float | None, now: float, after_s: float = DISABLE_AFTER_S) -> bool:
    return failing_since is not None and now - failing_since >= after_s


@dataclass
class Breaker:
    """One endpoint's circuit breaker (kept in the database by the worker: `saved`, `restored`)."""

    trip_after: int = TRIP_AFTER
    open_s: float = OPEN_S
    open_max_s: float = OPEN_MAX_S
    failures: int = 0
    open_until: float = 0.0
    _opened_for: float = 0.0

    @classmethod
    def restored(cls, saved: tuple[int, float, float]) -> Breaker:
        """The breaker as `saved` left it."""
        b = cls()
        b.failures, b.open_until, b._opened_for = saved
        return b

    def saved(self) -> tuple[int, float, float]:
        """(failures in a row, open until, its last rest): what the connector's row keeps."""
        return self.failures, self.open_until, self._opened_for

    def allows(self, now: float) -> bool:
        """Whether a delivery may be tried now (closed, or half-open: its rest is over)."""
        return now >= self.open_until

    @property
    def state(self) -> str:
        return "open" if self.failures >= self.trip_after else "closed"

    def success(self) -> None:
        self.failures, self.open_until, self._opened_for = 0, 0.0, 0.0

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.trip_after:
            self._opened_for = min(self.open_max_s, self._opened_for * 2 if self._opened_for else self.open_s)
            self.open_until = now + self._opened_for

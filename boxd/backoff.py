"""Exponential backoff with full jitter (pure code).

Full jitter (a uniform draw between 0 and the capped exponential) spreads the
reconnections of a fleet after a broker restart instead of bunching them.
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

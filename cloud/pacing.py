"""Per-Box budgets of decoding work, and a bounded LRU map (pure code: the time is passed in).

The receiver charges each Box's message its cost (the bytes its body inflates to, times a
weight for the kind: a point table costs more per byte than a batch) against the Box's token
bucket. A bucket may go into debt by one message of any size (so that the largest legitimate
message always passes), and a Box in debt waits until it has paid it back: one Box's work is
at most `rate` units a second, whatever it sends, so it cannot crowd out the others. What
waits is put aside by the receiver, not dropped (see `cloud.receiver`).

`Lru` is the bounded cache every per-Box map of the cloud uses: a size per entry, a total, and
the least recently used entries dropped beyond it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Lru(Generic[K, V]):
    """A dict that keeps at most `capacity` units (each entry weighs `weight(value)`, 1 by default)."""

    def __init__(self, capacity: int, weight: Callable[[V], int] = lambda _v: 1) -> None:
        self.capacity = capacity
        self._weight = weight
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self.size = 0

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or None."""
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: K, value: V) -> None:
        """Keep `value`; drop the least recently used entries beyond the capacity. A value heavier
        than the whole capacity is not kept."""
        self.pop(key)
        w = self._weight(value)
        if w > self.capacity:
            return
        self._items[key] = (value, w)
        self.size += w
        while self.size > self.capacity:
            _, (_, old) = self._items.popitem(last=False)
            self.size -= old

    def pop(self, key: K) -> V | None:
        """Remove an entry; its value or None."""
        hit = self._items.pop(key, None)
        if hit is None:
            return None
        self.size -= hit[1]
        return hit[0]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items


@dataclass
class _Bucket:
    tokens: float
    at: float


class Budgets:
    """A token bucket per key: `rate` units a second, at most `burst` saved, one message of debt."""

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: Lru[Hashable, _Bucket] = Lru(max_keys)  # a forgotten key starts full: never stricter

    def _fill(self, key: Hashable, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(self.burst, now)
            self._buckets.put(key, b)
        b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
        b.at = now
        return b

    def tokens(self, key: Hashable, now: float) -> float:
        """The key's tokens now (negative: in debt)."""
        return self._fill(key, now).tokens

    def ready(self, key: Hashable, now: float) -> bool:
        """Whether the key may spend now (its bucket is not in debt)."""
        return self._fill(key, now).tokens >= 0

    def admit(self, key: Hashable, cost: float, now: float) -> bool:
        """Spend `cost` if the bucket is not in debt (it may go into debt by this message)."""
        b = self._fill(key, now)
        if b.tokens < 0:
            return False
        b.tokens -= cost
        return True

    def wait_s(self, key: Hashable, now: float) -> float:
        """How long until the key may spend again (0 when it may now)."""
        b = self._fill(key, now)
        return 0.0 if b.tokens >= 0 else -b.tokens / self.rate

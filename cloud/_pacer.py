"""The receiver's pacing: each Box's decoding work is bounded, what goes over waits its turn.

Before a message is decoded, the Box is charged its cost (`cloud.pacing.Budgets`: the bytes
the body inflates to, weighted by kind). Over budget, the message is *put aside* in the store
(one small write, nothing decoded) and decoded later by the pacer's own thread, at the Box's
rate, oldest first. So is any message costing more than `INLINE_MAX` (a big point table, a
payload that inflates to megabytes): the MQTT thread, which serves every Box in turn, never
spends long on one message; while a Box has messages put aside, its new ones queue behind them, so its
order is kept. Nothing a Box sends is lost for being sent fast: a Box that keeps going over
its budget raises a `rate` alert, and only beyond `MAX_DEFERRED` messages put aside are its
messages dropped (a Box does not do that unless broken or hostile; the broker's own per-Box
rate limit comes first, see cloud/boxguard.c). Heartbeats over budget are dropped (the next one
says the same). Status messages and the broker's notices are never paced.

This module does no network I/O; its thread is started and stopped by the receiver.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from cloud._background import Background
from cloud.errors import StoreError
from cloud.monitor import Monitor
from cloud.pacing import Budgets
from cloud.store import Store
from proto import wire
from proto.errors import WireError
from proto.topics import Up

log = logging.getLogger("boxcloud.receiver")

RATE = 1024 * 1024  # cost units (inflated bytes, weighted) a Box may use a second
BURST = 8 * 1024 * 1024
WEIGHTS: dict[str, int] = {Up.META: 4}  # a point table costs ~4 times a batch per byte (rows become objects, JSON)
DEFERRABLE = frozenset({Up.DATA, Up.META, Up.EVENTS, Up.REPLIES})
PACED = DEFERRABLE | {Up.HEALTH}
INLINE_MAX = 512 * 1024  # a message costing more is always decoded by the pacer's thread, never the MQTT one
MAX_DEFERRED = 5000  # messages put aside per Box; beyond, dropped (and said so)
NOTICE_S = 10.0  # the monitor hears of a Box over its budget at most this often
DRAIN_S = 0.1

Dispatch = Callable[[str, str, bytes], None]  # (Box, leaf, payload): decode and store, may raise WireError


class Pacer(Background):
    """Per-Box budgets over one store. The constructor does no I/O; `start` starts the thread."""

    JOIN_S = 10.0

    def __init__(self, store: Store, monitor: Monitor, budgets: Budgets | None = None) -> None:
        self.store, self.monitor = store, monitor
        self.budgets: Budgets | None = budgets or Budgets(RATE, BURST)  # None: no pacing (benchmarks)
        self.deferred = 0  # messages put aside since start
        self.dropped = 0
        self._waiting: dict[str, int] = {}  # Box -> messages put aside now
        self._noticed: dict[str, float] = {}  # Box -> when the monitor was last told
        self._lock = threading.Lock()
        super().__init__()

    def start(self, dispatch: Dispatch) -> None:
        """Pick up what was put aside before a restart, and decode what waits, in a thread."""
        with self._lock:
            self._waiting = self.store.deferred_counts()
        self._spawn(self._loop, "pacer", dispatch)

    def waiting(self, box_id: str) -> int:
        """Messages of a Box put aside now."""
        with self._lock:
            return self._waiting.get(box_id, 0)

    def admit(self, box_id: str, leaf: str, payload: bytes) -> bool:
        """Whether to decode a message now; if not, it was put aside (or, a heartbeat, dropped).

        Raises:
            WireError: the payload's framing is bad (it is not put aside).
            StoreError: it could not be put aside.
        """
        if self.budgets is None or leaf not in PACED:
            return True
        now = time.monotonic()
        cost, waiting = _cost(leaf, payload, INLINE_MAX), self.waiting(box_id)
        if not waiting and cost <= INLINE_MAX and self.budgets.admit(box_id, cost, now):
            return True
        excess = bool(waiting) or not self.budgets.ready(box_id, now)  # else: only big, decoded soon
        if leaf not in DEFERRABLE:
            self._tell(box_id, "dropped (heartbeats over the Box's decoding budget)", now)
            return False
        if not self.store.defer(box_id, leaf, payload, MAX_DEFERRED):
            self.dropped += 1
            self._tell(box_id, f"dropped: {MAX_DEFERRED} already put aside", now)
            return False
        with self._lock:
            self._waiting[box_id] = self._waiting.get(box_id, 0) + 1
            self.deferred += 1
        if excess:
            self._tell(box_id, "put aside by the receiver, over the Box's decoding budget (decoded later)", now)
        return False

    def _tell(self, box_id: str, what: str, now: float) -> None:
        if now - self._noticed.get(box_id, -NOTICE_S) < NOTICE_S:
            return
        self._noticed[box_id] = now
        n = self.waiting(box_id)
        log.warning("Box %s is over its decoding budget: %s (%d waiting)", box_id, what, n)
        if self.store.box(box_id) is not None:
            self.monitor.on_limits(box_id, max(n, 1), what)

    def drain(self, dispatch: Dispatch, now: float | None = None) -> int:
        """Decode what waits, for every Box within its budget; returns how many were handled."""
        done = 0
        with self._lock:
            boxes = [b for b, n in self._waiting.items() if n > 0]
        for box_id in boxes:
            while self.budgets is None or self.budgets.ready(box_id, now or time.monotonic()):
                row = self.store.next_deferred(box_id)
                if row is None:
                    break
                row_id, leaf, payload = row
                try:
                    if self.budgets is not None:
                        self.budgets.admit(box_id, _cost(leaf, payload), now or time.monotonic())
                    dispatch(box_id, leaf, payload)
                except WireError as e:
                    log.warning("rejected a message put aside from %s (%s): %s", box_id, leaf, e)
                self.store.drop_deferred(row_id)
                done += 1
                with self._lock:
                    self._waiting[box_id] -= 1
            with self._lock:
                if self._waiting.get(box_id) == 0:
                    del self._waiting[box_id]
                    self._noticed.pop(box_id, None)
        return done

    def _loop(self, dispatch: Dispatch) -> None:
        while not self._stop.wait(DRAIN_S):
            try:
                self.drain(dispatch)
            except StoreError:
                log.exception("cannot decode the messages put aside; trying again")
            except Exception:  # the thread must outlive a bad row
                log.exception("unexpected failure decoding the messages put aside")


def _cost(leaf: str, payload: bytes, at_most: int = wire.MAX_INFLATED * 4) -> int:
    """What decoding a message costs, in budget units (the framing is checked: WireError); past
    `at_most`, only that it is more (so that a bomb is not inflated by the MQTT thread)."""
    if not payload:
        return 1
    weight = WEIGHTS.get(leaf, 1)
    return wire.inflated_size(payload, min(wire.MAX_INFLATED, at_most // weight)) * weight

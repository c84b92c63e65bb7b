"""A message the broker refuses (PUBACK "not authorized": over the Box's rate, issue 12) stays queued
and the Box waits before sending again, longer while refusals go on, not at once in a loop."""

from __future__ import annotations

import random
import time
from pathlib import Path

from boxd.backoff import Backoff
from boxd.daemon import REFUSED_BASE_S, REFUSED_MAX_S, Daemon


def test_refusals_pause_the_sending_and_an_acknowledgement_ends_the_pause(tmp_path: Path) -> None:
    d = Daemon(tmp_path, tmp_path / "boxd.toml")
    d.queue.open()
    d._refused = Backoff(REFUSED_BASE_S, REFUSED_MAX_S, random.Random(1))
    waits = []
    for mid in range(1, 9):
        d._inflight[mid] = mid  # batch `mid` in flight
        d._acked(mid, False)
        waits.append(d._hold_until - time.monotonic())
        assert mid not in d._inflight  # no longer in flight: it is sent again, after the pause
    assert all(0 <= w <= min(REFUSED_MAX_S, REFUSED_BASE_S * 2 ** n) for n, w in enumerate(waits))
    assert max(waits[4:]) > REFUSED_BASE_S * 2  # the pause grows while refusals go on
    d._inflight[100] = 100
    d._acked(100, True)
    d._inflight[101] = 101
    before = time.monotonic()
    d._acked(101, False)
    assert d._hold_until - before <= REFUSED_BASE_S  # back to the first, short pause
    d.queue.close()

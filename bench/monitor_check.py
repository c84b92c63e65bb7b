"""Measure one pass of the cloud monitor's periodic check (`cloud.monitor.Monitor.check`, every
second in `boxcloud run`) over N online Boxes with a heartbeat and recent data, on SQLite.

    .venv/bin/python -m bench.monitor_check [--boxes 1000]

Prints the wall and CPU milliseconds of a check (the mean of five, after one to warm up).
Figures, never assertions.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from cloud.monitor import Monitor
from cloud.store import Store


def measure(boxes: int) -> tuple[float, float]:
    """(wall ms, CPU ms) of one check over `boxes` online Boxes."""
    logging.disable(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as d:
        store = Store(Path(d) / "cloud.db")
        now = time.time()
        for i in range(boxes):
            box = f"MON-{i:05d}"
            store.enroll_box(box, box, i + 1, now + 86400)
            store.set_status(box, True, now, "", "1.0")
            store.put_health(box, {"v": 1, "ts": 1, "epoch": 1, "last_seq": 1, "hb_s": 300})
        with store.engine.begin() as c:  # recent data: no "online but sends no data" alert to write
            c.execute(sa.text("UPDATE boxes SET last_seen = :t"), {"t": now})
        monitor = Monitor(store)
        monitor.check()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(5):
            monitor.check()
        return 200 * (time.perf_counter() - t0), 200 * (time.process_time() - c0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.monitor_check", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--boxes", type=int, default=1000, help="online Boxes (default %(default)s)")
    args = p.parse_args(argv)
    wall, cpu = measure(args.boxes)
    print(f"{args.boxes} online Boxes: Monitor.check {wall:.1f} ms wall, {cpu:.1f} ms CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

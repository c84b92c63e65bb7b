"""A webhook connector's outbox at its cap (issue 19): what queuing and evicting cost on SQLite.

A disabled connector's outbox filled with `--items` items of about `--size` bytes, then `--more`
queued in chunks of 200 (as the worker's fanout does) with a cap of `--items`: each chunk evicts
as many of the oldest. Figures: items queued a second while under the cap, and while evicting;
one eviction of a chunk (p50, p99); the cap's check when nothing is over (one row read).

    .venv/bin/python -m bench.hook_outbox [--items 100000] [--more 10000] [--size 400]

Figures, never assertions.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cloud.store import Store

CHUNK = 200


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--more", type=int, default=10_000)
    p.add_argument("--size", type=int, default=400)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "cloud.db")
        cid = store.add_connector(1, "bench", "webhook", service_account_id=1, config={}, sealed="")
        store.update_connector(cid, state="disabled")
        pad = "x" * max(0, a.size - 40)

        def queue(first: int, n: int) -> None:
            row = store.connector(cid)
            assert row is not None
            store.queue_items(cid, (row.feed_pos, row.state), row.feed_pos,
                              [("BOX-1", f'{{"id":"BOX-1/1/{first + k}","data":"{pad}"}}') for k in range(n)])

        t0 = time.perf_counter()
        for first in range(0, a.items, CHUNK):
            queue(first, min(CHUNK, a.items - first))
        fill = time.perf_counter() - t0
        row = store.connector(cid)
        assert row is not None
        checks = []
        for _ in range(200):
            t = time.perf_counter()
            store.evict(cid, a.items, row.outbox_bytes, time.time())
            checks.append(time.perf_counter() - t)
        evictions, t0 = [], time.perf_counter()
        for first in range(a.items, a.items + a.more, CHUNK):
            queue(first, CHUNK)
            t = time.perf_counter()
            n, _ = store.evict(cid, a.items, 1 << 62, time.time())
            evictions.append(time.perf_counter() - t)
            assert n == CHUNK
        over = time.perf_counter() - t0
        depth = store.outbox_depth(cid)
    ms = sorted(e * 1000 for e in evictions)
    print(f"outbox of {a.items} items of {a.size} bytes ({int(str(depth['bytes'])) / 2**20:.0f} MiB), SQLite")
    print(f"  queued under the cap: {a.items / fill:,.0f} items/s")
    print(f"  queued at the cap, each chunk of {CHUNK} evicting as many: {a.more / over:,.0f} items/s; "
          f"one eviction p50 {statistics.median(ms):.1f} ms, p99 {ms[int(len(ms) * 0.99) - 1]:.1f} ms")
    print(f"  the cap's check under the cap: p50 {statistics.median(checks) * 1e6:.0f} us")
    print(f"  evicted {depth['evicted']}, waiting {depth['waiting']}")


if __name__ == "__main__":
    main()

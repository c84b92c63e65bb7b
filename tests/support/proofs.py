"""What "nothing lost, nothing twice" means, checked on the cloud's storage of one Box."""

from __future__ import annotations

import itertools
from collections import Counter

from cloud.store import Store


def assert_exactly_once(store: Store, box_id: str) -> dict[str, int]:
    """Every batch of every epoch present from 1 up (no gap), no sample stored twice.

    Returns figures: batches, samples, epochs, duplicates (0), missing batches (0).
    """
    keys = store.batch_keys(box_id)
    by_epoch: dict[int, list[int]] = {}
    for e, s in keys:
        by_epoch.setdefault(e, []).append(s)
    missing = []
    for e, seqs in by_epoch.items():
        evicted: set[int] = set()  # batches the Box evicted (and said so) are not lost
        for a, b in store._db().execute("SELECT seq_from, seq_to FROM evicted WHERE box_id=? AND epoch=?",
                                        (box_id, e)):
            evicted.update(range(int(a), int(b) + 1))
        have = set(seqs)
        missing += [(e, s) for s in range(1, max(seqs) + 1) if s not in have and s not in evicted]
    samples = store.samples(box_id)
    dupes = [k for k, n in Counter((p, t) for p, t, _, _ in samples).items() if n > 1]
    assert not missing, f"batches lost: {missing[:10]}"
    conflicts = store.conflicts(box_id)
    assert not conflicts, f"batch numbers re-used for other data (lost queue state): {conflicts[:10]}"
    assert not dupes, f"samples stored twice: {dupes[:10]}"
    return {"batches": len(keys), "samples": len(samples), "epochs": len(by_epoch), "duplicates": 0, "lost": 0}


def assert_counters_monotonic(store: Store, box_id: str, point: str) -> int:
    """A counter point (e.g. an energy meter's kWh) never goes backwards in time order."""
    values = [v for _, _, v, q in store.samples(box_id, point) if q == 0]
    assert values, f"no good sample of {point}"
    assert all(a <= b for a, b in itertools.pairwise(values)), f"{point} went backwards"
    return len(values)
